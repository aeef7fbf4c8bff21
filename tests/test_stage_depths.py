"""Transit depths against the injected truth: white-light z, honest per-channel errors, t0, limb darkening."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from calib_core.config import ConfigError
from calib_core.config.base import check_constraints
from calib_core.stages.depths import step as depths
from calib_core.stages.depths.curves import Curves, baseline_design
from calib_core.stages.depths.limb_darkening import (profiled_chi2, profiled_statistics, smooth_law,
                                                     wavenumber_coordinate)
from calib_core.stages.depths.linear import fit_multiplicative
from calib_core.stages.depths.uncertainties import fill_missing
from stagectx import Setting
from calib_core.transit import (
    LD_FLUX_WEIGHTS,
    Geometry,
    deficit_basis,
    ld_direction,
    ld_from_beta,
    light_curve,
)
from test_stage_trace import INSTRUMENTS, run_series_chain, run_stage, simulate_visit

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """trace -> phase -> depths (default configs) on three simulated visits."""
    out = {}
    for seed in SEEDS:
        visit = simulate_visit(seed)
        out[seed] = {"visit": visit, **run_series_chain(visit, tmp_path_factory.mktemp(f"depths{seed}"))}
    return out


def _rerun_depths(chain: dict, cfg: depths.DepthsConfig, path):
    """The depths stage alone on a chain's stored phase/trace outputs."""
    ctx = Setting(chain["visit"]["planet"], None, {"depths": cfg}, chain["outputs"])
    inp = {i: chain["outputs"][("phase", i)] for i in INSTRUMENTS}
    return run_stage(depths.STAGE, inp, cfg, ctx, path)


# ---------------------------------------------------------------------------
# configuration and kernels
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("path, value, fragment", [
    ("limb_darkening.method", "magic", "must be one of smooth, fit, fixed"),
    ("fit.baseline_degree", -1, "must be >= 0"),
    ("fit.data", "raw", "must be one of unbinned, phase_binned"),
    ("geometry.free", ["t0", "period"], "must be one of t0, a_rs, inc"),
    ("geometry.instruments", [], "list at least one"),
    ("errors.red_noise", "gp", "must be one of"),
])
def test_bad_values_raise_config_error_naming_the_key(path, value, fragment):
    cfg = depths.DepthsConfig()
    section, leaf = path.split(".")
    setattr(getattr(cfg, section), leaf, value)
    with pytest.raises(ConfigError) as err:
        check_constraints(cfg, "calib.depths")
    assert str(err.value).startswith(f"calib.depths.{path} = ") and fragment in str(err.value)


@pytest.mark.parametrize("k, u1, u2, inc", [(0.12, 0.35, 0.18, 88.0), (0.08, 0.05, 0.4, 86.7), (0.15, 0.6, -0.1, 90.0)])
def test_linear_limb_darkening_basis_is_exact_against_batman(k, u1, u2, inc):
    geometry = Geometry(3.7, 4.1, 9.0, inc)
    time_h = np.linspace(0, 7.5, 900)
    basis = deficit_basis(time_h, geometry, k)
    flux = light_curve(time_h, geometry, [k * k], [u1], [u2])[:, 0]
    beta = k * k * ld_direction(u1, u2)
    np.testing.assert_allclose(1 - beta @ basis, flux, rtol=0, atol=1e-14)
    depth, r1, r2 = ld_from_beta(beta)
    assert (depth, r1, r2) == pytest.approx((k * k, u1, u2), abs=1e-14)
    assert LD_FLUX_WEIGHTS @ ld_direction(u1, u2) == pytest.approx(1.0)


def test_multiplicative_fit_recovers_baseline_and_depth_exactly():
    geometry = Geometry(3.5, 5.0, 10.0, 88.5)
    time_h = np.linspace(0, 7.5, 600)
    template = (ld_direction(0.3, 0.2) @ deficit_basis(time_h, geometry, 0.11))[None, None, :]
    design = baseline_design(time_h, 2)
    truth = np.array([1.02, 0.004, -0.002])
    flux = (design @ truth) * (1 - 0.0121 * template[0, 0])
    fit = fit_multiplicative(flux[:, None], np.full((600, 1), 1e6), design, template)
    np.testing.assert_allclose(fit.baseline[0], truth, rtol=1e-10)
    assert fit.gamma[0, 0] == pytest.approx(0.0121, rel=1e-10) and fit.chi2[0] < 1e-16


def test_batched_multiplicative_fit_matches_a_per_channel_least_squares_oracle():
    from scipy.optimize import least_squares

    rng = np.random.default_rng(4)
    geometry = Geometry(3.5, 5.0, 10.0, 88.5)
    time_h = np.linspace(0, 7.5, 300)
    e = deficit_basis(time_h, geometry, 0.11)
    design = baseline_design(time_h, 2)
    n_chan = 4
    templates = e[None] * (1 + 0.02 * rng.normal(size=(n_chan, 3, 1)))       # (C, 3, M), per channel
    offset = 1e-3 * e[0][None] * rng.random((n_chan, 1))
    beta = 0.0121 * ld_direction(0.3, 0.2)
    flux = ((design @ np.array([1.02, 0.004, -0.002]))[:, None]
            * (1 - offset.T - np.einsum("ctm,t->mc", templates, beta)) + 2e-4 * rng.normal(size=(300, n_chan)))
    weight = np.full(flux.shape, 1 / 2e-4 ** 2)
    weight[rng.random(flux.shape) < 0.1] = 0.0
    weight[:, 3] = 0.0
    weight[:4, 3] = 1.0                                                     # too few points: NaN
    rows = np.array([[-0.3, 0.7, -0.3], [-0.2, -0.2, 0.8]])
    ivar = np.full((n_chan, 2), 1e5)
    fit = fit_multiplicative(flux, weight, design, templates, offset, prior=(rows, ivar), iters=6)
    for c in range(3):
        sw = np.sqrt(weight[:, c])

        def resid(x, c=c, sw=sw):
            model = (design @ x[:3]) * (1 - offset[c] - x[3:] @ templates[c])
            return np.concatenate([sw * (flux[:, c] - model), np.sqrt(ivar[c]) * (rows @ x[3:])])

        ref = least_squares(resid, np.r_[1.0, 0, 0, 0, 0, 0], xtol=1e-15, ftol=1e-15, gtol=1e-15)
        np.testing.assert_allclose(np.r_[fit.baseline[c], fit.gamma[c]], ref.x, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(fit.cov[c], np.linalg.inv(ref.jac.T @ ref.jac), rtol=1e-5)
        assert fit.chi2[c] == pytest.approx(np.sum(resid(ref.x)[:300] ** 2), rel=1e-8)
        np.testing.assert_allclose(fit.model[:, c], (design @ ref.x[:3]) * (1 - offset[c] - ref.x[3:] @ templates[c]),
                                   rtol=1e-10)
    assert fit.n.tolist() == np.count_nonzero(weight > 0, axis=0).tolist()
    assert np.isnan(fit.gamma[3]).all() and np.isnan(fit.model[:, 3]).all() and np.isnan(fit.chi2[3])


def _additive_channels(u1, u2, depth, noise, seed=0):
    """Channels ``y = design @ b - depth * (d(u1, u2) . E)`` (+ white noise) on one geometry, with their inputs."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(3.5, 5.0, 10.0, 88.5)
    time_h = np.linspace(0, 7.5, 400)
    e = deficit_basis(time_h, geometry, 0.11)
    design = baseline_design(time_h, 2)
    n = len(u1)
    base = design @ np.column_stack([1 + 0.01 * rng.normal(size=n), 1e-3 * rng.normal(size=(n, 2))]).T
    signal = np.einsum("cx,xm->mc", ld_direction(u1, u2), e) * depth
    flux = base - signal + noise * rng.normal(size=base.shape)
    weight = np.full(flux.shape, 1.0 / max(noise, 1e-6) ** 2)
    weight[::37, 0] = 0.0                                            # a few unusable points
    curves = Curves(time_h, flux, weight, 0.0, np.linspace(1.0, 3.0, n))
    return curves, design, e


def test_profiled_chi2_matches_direct_least_squares_and_its_gradient_finite_differences():
    u1, u2 = np.array([0.1, 0.3, 0.5, 0.2]), np.array([0.3, 0.2, 0.05, -0.1])
    curves, design, e = _additive_channels(u1, u2, np.array([0.010, 0.012, 0.011, 0.009]), noise=2e-4)
    stats = profiled_statistics(curves, design, e)
    u = np.column_stack([u1 + 0.07, u2 - 0.05])                      # away from the optimum
    chi2, grad = profiled_chi2(stats, u)
    for c in range(u.shape[0]):                                      # oracle: weighted least squares per channel
        sw = np.sqrt(curves.weight[:, c])
        a = np.column_stack([design, -(ld_direction(*u[c]) @ e)]) * sw[:, None]
        coef = np.linalg.lstsq(a, curves.flux[:, c] * sw, rcond=None)[0]
        # cross products: chi2 (~400) is the difference of two sums of ~1e10, so ~7 digits cancel
        assert chi2[c] == pytest.approx(np.sum((curves.flux[:, c] * sw - a @ coef) ** 2), rel=1e-6)
    h = 1e-6
    for j in range(2):
        step = np.zeros(2)
        step[j] = h
        numeric = (profiled_chi2(stats, u + step)[0] - profiled_chi2(stats, u - step)[0]) / (2 * h)
        np.testing.assert_allclose(grad[:, j], numeric, rtol=1e-5)


def test_smooth_law_recovers_an_exact_law_from_noise_free_channels():
    n = 40
    curves, design, e = _additive_channels(np.zeros(n), np.zeros(n), np.zeros(n), noise=0.0)
    x = wavenumber_coordinate(curves.wavelength_um)
    law = np.array([[0.35, -0.12, 0.03], [0.18, 0.05, -0.02]])      # u1, u2 Legendre coefficients
    u = np.polynomial.legendre.legvander(x, 2) @ law.T
    depth = 0.012 + 0.001 * np.sin(3 * x)
    signal = np.einsum("cx,xm->mc", ld_direction(u[:, 0], u[:, 1]), e) * depth
    curves = Curves(curves.time_h, curves.flux - signal, curves.weight, 0.0, curves.wavelength_um)
    usable = np.ones(n, bool)
    fitted = smooth_law(curves, e, design, 2, usable, (0.3, 0.15))
    np.testing.assert_allclose(fitted, law, atol=1e-4)


def test_fill_missing_interpolates_with_a_conservative_error():
    out = {"mu": np.array([0.01, 0.0101, np.nan, 0.0103, 0.0104]), "sigma": np.array([1e-4, 1e-4, np.nan, 1e-4, 2e-4]),
           "wavelength_um": np.array([2.0, 2.1, 2.2, 2.3, 2.4]), "instrument": np.ones(5)}
    filled = fill_missing(out)
    assert filled["filled"].tolist() == [False, False, True, False, False]
    assert filled["mu"][2] == pytest.approx(0.0102)
    assert filled["sigma"][2] > 1e-4


# ---------------------------------------------------------------------------
# accuracy against the truth (three seeds, limb darkening varying with wavelength)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_depths_against_truth(chains, seed):
    chain = chains[seed]
    m = chain["metrics"]["depths"]
    truth = chain["visit"]
    assert m["fit_converged"]
    assert abs(m["z_white"]) < 3 and abs(m["z_fgs1"]) < 3                    # white-light depths within 3 sigma
    assert 0.7 < m["residual_z_std"] < 1.5                                   # honest per-channel errors
    assert abs(m["residual_z_mean"]) < 0.5
    assert abs(m["t0_h"] - truth["geometry"].t0_h) * 60 < 2.0                # t0 within 2 minutes
    assert abs(m["a_rs"] - truth["geometry"].a_rs) < 4 * m["a_rs_err"]
    assert abs(m["inc_deg"] - truth["geometry"].inc_deg) < 4 * m["inc_err_deg"]
    assert all(g.passed for g in depths.STAGE.gates(m, depths.DepthsConfig()))


def test_output_layout_and_diagnostics(chains):
    chain = chains[SEEDS[0]]
    out = chain["outputs"][("depths", None)]
    f = out.fields
    assert f["mu"].shape == f["sigma"].shape == f["wavelength_um"].shape == (283,)
    np.testing.assert_allclose(f["wavelength_um"], chain["visit"]["wavelength"])     # FGS1, then AIRS ascending
    assert f["instrument"].tolist() == [0] + [1] * 282 and out.meta["instruments"] == list(INSTRUMENTS)
    assert np.all(f["sigma"] > 0) and not f["filled"].any()
    plots = depths.STAGE.diagnostics(out, chain["metrics"]["depths"], chain["ctx"].context("depths"))
    spectrum = plots[0]
    # one NaN row breaks the line between FGS1 and AIRS-CH0
    yerr = np.asarray(spectrum.yerr)
    assert np.count_nonzero(np.isnan(yerr)) == 1 and np.allclose(yerr[np.isfinite(yerr)], f["sigma"])
    gap = int(np.flatnonzero(np.isnan(yerr))[0])
    assert np.asarray(spectrum.x)[gap - 1] < np.asarray(spectrum.x)[gap] < np.asarray(spectrum.x)[gap + 1]
    assert spectrum.overlay[0].label == "truth"
    assert any(p.kind == "histogram" for p in plots)
    white = [p for p in plots if p.title.startswith("White light")]
    assert len(white) == 4 and all(len(p.x) <= 400 for p in white)


def test_recovered_limb_darkening_follows_the_truth(chains):
    chain = chains[SEEDS[0]]
    f = chain["outputs"][("depths", None)].fields
    assert np.max(np.abs(f["u1"][1:] - chain["visit"]["u1"][1:])) < 0.15
    assert chain["outputs"][("depths", None)].meta["limb_darkening"]["AIRS-CH0"]["mode"] == "smooth"
    assert chain["outputs"][("depths", None)].meta["limb_darkening"]["FGS1"]["mode"] == "free"


def test_fixed_limb_darkening_guess_biases_the_depths(chains, tmp_path):
    chain = chains[SEEDS[0]]
    cfg = depths.DepthsConfig()
    cfg.limb_darkening.method, cfg.limb_darkening.u1, cfg.limb_darkening.u2 = "fixed", 0.55, 0.3
    _, fixed = _rerun_depths(chain, cfg, tmp_path / "fixed")
    assert abs(fixed["residual_z_mean"]) > 1.0 or abs(fixed["z_white"]) > 3.0
    assert abs(chain["metrics"]["depths"]["residual_z_mean"]) < 0.5


@pytest.mark.parametrize("changes", [{"limb_darkening.method": "fit"}, {"fit.data": "phase_binned"},
                                     {"errors.red_noise": "per_channel"}])
def test_alternative_settings_stay_honest(chains, tmp_path, changes):
    cfg = depths.DepthsConfig()
    for path, value in changes.items():
        section, leaf = path.split(".")
        setattr(getattr(cfg, section), leaf, value)
    _, m = _rerun_depths(chains[SEEDS[1]], cfg, tmp_path / "alt")
    assert abs(m["z_white"]) < 3 and 0.7 < m["residual_z_std"] < 1.5


# ---------------------------------------------------------------------------
# end to end on demo planets: raw frames -> every stage of the nominal profile
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_150(tmp_path_factory):
    from calib_core.sim import make_demo

    return make_demo(tmp_path_factory.mktemp("depths_demo") / "data", seed=3, n_pairs=150)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo_root", "demo_150"])
def test_end_to_end_on_demo_planets(which, request, tmp_path):
    from calib_core.chain import run_chain
    from calib_core.config import compose_config
    from calib_core.sim import DEMO_PLANET_ID, load_truth

    root = request.getfixturevalue(which)
    cfg = compose_config("calib/nominal", [f"data.root={root}", f"run_dir={tmp_path / 'run'}"])
    result = run_chain(cfg)
    truth = load_truth(root, DEMO_PLANET_ID)
    m = result.record("depths").metrics
    assert abs(m["z_white"]) < 3 and abs(m["z_fgs1"]) < 3
    assert 0.7 < m["residual_z_std"] < 1.5
    assert abs(m["t0_h"] - truth["t0_h"]) * 60 < 2.0
    with open(tmp_path / "run" / "depths.csv") as fh:
        header, row = list(csv.reader(fh))
    assert len(header) == len(row) == 1 + 2 * 283 and all(math.isfinite(float(v)) for v in row[1:])
