"""Temperature scaling, COREL and the top_level_calib stage on synthetic miscalibrated predictions.

Synthetic truth: labels ``y``; predicted ``mu = y + f_b sigma eps`` with
``eps ~ N(0, 1)``, i.e. the predicted ``sigma`` (itself noisy, log-normal
around 100 ppm, 30 ppm for FGS1) is too small by a factor ``f_b`` that varies
smoothly across the bins.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from calib_core.config.base import ConfigError
from calib_core.io import DataLayoutError
from calib_core.sigma.corel import (
    build_graph,
    conformal_factors,
    conformal_quantile,
    fit_corel,
    fit_log_scales,
    graph_laplacian,
    region_labels,
    split_planets,
    standard_wavelengths,
)
from calib_core.sigma.metrics import evaluate, z_scores
from calib_core.sigma.model import SigmaModel, fit_model, load_model, save_model
from calib_core.sigma.predictions import InputError
from calib_core.sigma.temperature import fit_temperature, solve_regularised, temperature_objective
from calib_core.stages.top_level_calib.config import TopLevelCalibConfig
from calib_core.stages.top_level_calib.step import STAGE
from calib_core.store import StoreWriter
from stagectx import Setting

B = 283
BINS = np.arange(B)
SMOOTH_FACTOR = 1.6 + 0.5 * np.sin(2 * np.pi * BINS / B) + 0.2 * np.cos(6 * np.pi * BINS / B)


def synthetic(n_planets: int, factor: np.ndarray | float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, mu, sigma)`` with sigma too small by ``factor``."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.005, 0.03, size=(n_planets, 1)) + 2e-4 * np.sin(
        np.linspace(0, 8, B) + rng.uniform(0, 6, size=(n_planets, 1)))
    base = np.full(B, 1e-4)
    base[0] = 3e-5
    sigma = base * rng.lognormal(0.0, 0.3, size=(n_planets, B))
    mu = y + factor * sigma * rng.standard_normal((n_planets, B))
    return y, mu, sigma


@pytest.fixture(scope="module")
def train():
    return synthetic(400, SMOOTH_FACTOR, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return synthetic(1000, SMOOTH_FACTOR, seed=2)


def _cfg(**changes) -> TopLevelCalibConfig:
    cfg = TopLevelCalibConfig()
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            setattr(cfg, section, replace(getattr(cfg, section), **{name: value}))
        else:
            setattr(cfg, section, value)
    return cfg


# ---------------------------------------------------------------------------
# temperature
# ---------------------------------------------------------------------------


def test_global_temperature_recovers_constant_factor():
    y, mu, sigma = synthetic(300, 2.0, seed=3)
    t = fit_temperature(z_scores(y, mu, sigma))
    assert t.shape == ()
    assert float(t) == pytest.approx(2.0, rel=0.02)


def test_per_bin_temperature_recovers_smooth_factor(train):
    t = fit_temperature(z_scores(*train), per_bin=True)
    rel = t / SMOOTH_FACTOR - 1
    assert t.shape == (B,)
    assert np.sqrt(np.mean(rel**2)) < 0.05
    assert abs(np.median(rel)) < 0.02


def test_regularised_newton_minimises_the_objective():
    mean_z2 = np.array([0.01, 0.3, 1.0, 4.0, 50.0])
    for l2 in (0.1, 1.0, 10.0):
        t = solve_regularised(mean_z2, l2, iters=20)
        grid = np.exp(np.linspace(-4, 4, 200_001))
        best = grid[np.argmin(temperature_objective(grid[:, None], mean_z2, l2), axis=0)]
        np.testing.assert_allclose(t, best, rtol=1e-4)
        assert np.all((t - 1) * (np.sqrt(mean_z2) - 1) >= 0)       # between 1 and the closed form
    assert solve_regularised(np.array(4.0), 1e6, iters=20) == pytest.approx(1.0, abs=1e-4)


def test_temperature_l2_zero_is_closed_form_and_clamped():
    z = np.random.default_rng(0).normal(0, 3.0, size=(50, B))
    assert float(fit_temperature(z)) == pytest.approx(np.sqrt(np.mean(z**2)))
    assert float(fit_temperature(z, clamp=(0.1, 2.0))) == 2.0
    assert float(fit_temperature(z * 1e-3, clamp=(0.1, 2.0))) == 0.1


@pytest.mark.parametrize("method", ["temperature", "corel"])
def test_held_out_coverage_score_and_nll_improve(method, train, held_out):
    cfg = _cfg(method=method, temperature__per_bin=True)
    model = fit_model(cfg, *train)
    y, mu, sigma = held_out
    before = evaluate(y, mu, sigma)
    after = evaluate(y, mu, model.apply(sigma))
    assert abs(after["coverage_68"] - 0.68) < 0.03
    assert abs(after["coverage_95"] - 0.95) < 0.03
    assert after["challenge_score"] > before["challenge_score"] + 0.03
    assert after["nll"] < before["nll"] - 0.2
    assert after["ece"] < 0.02 < before["ece"]


# ---------------------------------------------------------------------------
# COREL
# ---------------------------------------------------------------------------


def test_graph_respects_detectors_and_is_symmetric():
    wl = standard_wavelengths(B)
    regions = region_labels(wl, 4)
    assert regions[0] == 0 and set(np.unique(regions[1:])) == {1, 2, 3, 4}
    w = build_graph(wl, 4, regions, region_weight=0.5)
    np.testing.assert_allclose(w, w.T)
    assert np.all(w[0, 1:] == 0)                       # FGS1 isolated from AIRS
    np.testing.assert_allclose(graph_laplacian(w).sum(axis=1), 0, atol=1e-12)
    plain = build_graph(wl, 4)
    assert plain[0, 1:5].sum() == 4                    # without regions FGS1 joins the bluest AIRS bins
    assert np.all(plain.sum(axis=1) >= 4)


def test_conformal_quantile_rank_and_fallback():
    scores = np.arange(1.0, 11.0)                      # n = 10
    assert conformal_quantile(scores, 0.68) == 8.0     # ceil(11 * 0.68) = 8
    assert conformal_quantile(scores, 0.95) is None    # ceil(11 * 0.95) = 11 > 10
    z = np.random.default_rng(1).standard_normal((4, B))
    factors, info = conformal_factors(z, 0.95, "per_bin", region_labels(standard_wavelengths(B), 4))
    assert info["bins_by_level"]["per_bin"] == 0       # 4 planets cannot certify 95 % per bin
    assert info["bins_by_level"]["group"] == B - 1     # the AIRS regions (70+ bins x 4 planets)
    assert info["bins_by_level"]["global"] == 1        # FGS1 is a one-bin group: falls back to global
    assert factors.shape == (B,)


def test_zero_smoothness_is_per_bin_temperature(train):
    z = z_scores(*train)
    s, info = fit_log_scales(z, graph_laplacian(build_graph(standard_wavelengths(B), 4)), 0.0, (-5.0, 5.0))
    assert info["converged"]
    np.testing.assert_allclose(np.exp(s), fit_temperature(z, per_bin=True), rtol=1e-3)


def test_corel_beats_per_bin_temperature_with_few_planets(held_out):
    y, mu, sigma = held_out
    wins = []
    for seed in range(3):
        few = synthetic(8, SMOOTH_FACTOR, seed=10 + seed)
        z = z_scores(*few)
        t = fit_temperature(z, per_bin=True)
        scale, details = fit_corel(z, standard_wavelengths(B), seed=seed)
        nll_t = evaluate(y, mu, sigma * t)["nll"]
        nll_c = evaluate(y, mu, sigma * scale)["nll"]
        wins.append(nll_t - nll_c)
        assert details["n_fit"] == 4 and details["n_conformal"] == 4
        # 4 conformal planets x ~70 bins per group: coverage standard error ~0.03, hence 5 points here
        assert abs(evaluate(y, mu, sigma * scale)["coverage_68"] - 0.68) < 0.05
    assert min(wins) > 0.03


def test_split_planets_is_seeded_and_non_empty():
    a, b = split_planets(10, 0.5, 3)
    assert len(a) == 5 and len(b) == 5 and not set(a) & set(b)
    np.testing.assert_array_equal(a, split_planets(10, 0.5, 3)[0])
    assert [len(p) for p in split_planets(2, 0.99, 0)] == [1, 1]
    with pytest.raises(ValueError):
        split_planets(1, 0.5, 0)


def test_model_round_trip_and_errors(tmp_path, train):
    model = fit_model(_cfg(method="corel"), *train)
    save_model(tmp_path / "model.json", model)
    back = load_model(tmp_path / "model.json")
    np.testing.assert_allclose(back.scale, model.scale)
    assert back.method == "corel" and back.details["n_planets"] == 400
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "missing.json")
    (tmp_path / "short.json").write_text(json.dumps({**model.to_json(), "scale": [1.0, 2.0]}))
    with pytest.raises(InputError, match="2 scales, expected 283"):
        load_model(tmp_path / "short.json")
    with pytest.raises(ConfigError, match=r"calib\.top_level_calib\.method"):
        fit_model(_cfg(method="none"), *train)


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


class FakePlanet:
    """The part of :class:`calib_core.io.Planet` the stage uses."""

    def __init__(self, labels: np.ndarray | None, planet_id: int = 77, wavelengths: bool = True):
        self._labels, self.planet_id, self._wavelengths = labels, planet_id, wavelengths

    def labels(self) -> np.ndarray | None:
        return self._labels

    def wavelengths(self) -> np.ndarray:
        if not self._wavelengths:
            raise DataLayoutError("/data/wavelengths.csv: missing wavelengths file")
        return np.concatenate([[0.7], np.linspace(1.95, 3.9, B - 1)])


def _depths(tmp_path, mu, sigma, planet_id=77):
    with StoreWriter(tmp_path / "calib" / "depths" / "planet") as writer:
        writer.put("mu", mu, unit="(Rp/Rs)^2")
        writer.put("sigma", sigma, unit="(Rp/Rs)^2")
        return writer.commit({"planet_id": planet_id})


def _run(tmp_path, cfg, inp, planet):
    ctx = Setting(planet, None, {"top_level_calib": cfg})
    with StoreWriter(tmp_path / "calib" / "top_level_calib" / "planet") as writer:
        ctx = ctx.context("top_level_calib")
        metrics = STAGE.run(inp, cfg, ctx, writer)
        out = writer.commit({"metrics": metrics})
    json.dumps(metrics)
    return metrics, out, ctx


def test_stage_method_none_passes_through(tmp_path):
    y, mu, sigma = synthetic(1, 2.0, seed=4)
    depths = _depths(tmp_path, mu[0], sigma[0])
    metrics, out, ctx = _run(tmp_path, TopLevelCalibConfig(), depths, FakePlanet(y[0]))
    assert metrics == {"method": "none", "skipped": True}
    np.testing.assert_array_equal(out.fields["mu"], mu[0])
    np.testing.assert_array_equal(out.fields["sigma"], sigma[0])
    assert out.meta["planet_id"] == 77
    assert STAGE.gates(metrics, TopLevelCalibConfig()) == []
    assert STAGE.diagnostics(out, metrics, ctx) == []


def test_stage_temperature_in_sample(tmp_path):
    y, mu, sigma = synthetic(1, 2.0, seed=5)
    cfg = _cfg(method="temperature")
    depths = _depths(tmp_path, mu[0], sigma[0])
    metrics, out, ctx = _run(tmp_path, cfg, depths, FakePlanet(y[0]))
    assert metrics["fitted_on"] == "this planet (in-sample)"
    assert metrics["model"]["details"]["T"] == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(out.fields["sigma"], sigma[0] * metrics["model"]["details"]["T"])
    np.testing.assert_array_equal(out.fields["mu"], mu[0])
    assert metrics["after"]["z_std"] == pytest.approx(1.0, abs=0.02)
    assert metrics["after"]["nll"] < metrics["before"]["nll"]
    assert metrics["warnings"]
    gates = STAGE.gates(metrics, cfg)
    assert {g.name for g in gates} == {"coverage_68_min", "coverage_68_max", "abs_z_mean"}
    assert all(g.passed for g in gates)
    plots = STAGE.diagnostics(out, metrics, ctx)
    assert [p.kind for p in plots] == ["table", "curve", "curve", "curve", "curve"]
    z_hist = plots[2]                                   # before / after / N(0, 1) counts over the z bins
    assert [z_hist.label] + [o.label for o in z_hist.overlay] == ["before", "after", "N(0, 1)"]


def test_stage_applies_model_path_without_labels(tmp_path):
    scale = np.linspace(1.2, 2.4, B)
    save_model(tmp_path / "model.json", SigmaModel("corel", scale, {"graph_scale": scale.tolist(),
                                                                    "conformal_factor": [1.0] * B}))
    _, mu, sigma = synthetic(1, 1.0, seed=6)
    cfg = _cfg(method="corel", model_path=str(tmp_path / "model.json"))
    metrics, out, ctx = _run(tmp_path, cfg, _depths(tmp_path, mu[0], sigma[0]), FakePlanet(None))
    np.testing.assert_allclose(out.fields["sigma"], sigma[0] * scale)
    np.testing.assert_allclose(out.fields["scale"], scale)
    assert metrics["has_labels"] is False and "after" not in metrics
    assert metrics["fitted_on"].startswith("model ")
    assert STAGE.gates(metrics, cfg) == []
    assert [p.title for p in STAGE.diagnostics(out, metrics, ctx)] == ["COREL per-bin sigma scale"]
    wrong = _cfg(method="temperature", model_path=str(tmp_path / "model.json"))
    with pytest.raises(ConfigError, match="fitted with method 'corel'"):
        _run(tmp_path, wrong, _depths(tmp_path, mu[0], sigma[0]), FakePlanet(None))


def test_stage_without_labels_or_model_names_model_path(tmp_path):
    _, mu, sigma = synthetic(1, 1.0, seed=7)
    with pytest.raises(ConfigError, match=r"calib\.top_level_calib\.model_path"):
        _run(tmp_path, _cfg(method="temperature"), _depths(tmp_path, mu[0], sigma[0]), FakePlanet(None))


def test_stage_rejects_invalid_depths(tmp_path):
    y, mu, sigma = synthetic(1, 1.0, seed=8)
    bad = sigma[0].copy()
    bad[5] = -1.0
    with pytest.raises(InputError, match=r"sigma must be > 0.*bin 5"):
        _run(tmp_path, _cfg(method="temperature"), _depths(tmp_path, mu[0], bad), FakePlanet(y[0]))


def test_stage_corel_in_sample_single_planet(tmp_path):
    y, mu, sigma = synthetic(1, SMOOTH_FACTOR, seed=9)
    metrics, _, _ = _run(tmp_path, _cfg(method="corel"), _depths(tmp_path, mu[0], sigma[0]), FakePlanet(y[0]))
    details = metrics["model"]["details"]
    assert details["conformal_in_sample"] is True and details["n_fit"] == 1
    assert details["wavelengths_source"] == "given"              # the planet's wavelengths.csv
    assert details["wavelengths_um"][1] == 1.95
    assert abs(metrics["after"]["coverage_68"] - 0.68) < 0.05
    metrics, _, _ = _run(tmp_path, _cfg(method="corel"), _depths(tmp_path, mu[0], sigma[0]),
                         FakePlanet(y[0], wavelengths=False))
    assert metrics["model"]["details"]["wavelengths_source"] == "standard grid"
