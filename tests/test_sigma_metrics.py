"""The 2025 challenge score and the calibration metrics against explicit formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from calib_core.sigma.metrics import (
    ECE_LEVELS,
    challenge_score,
    challenge_score_raw,
    coverage,
    evaluate,
    expected_calibration_error,
    gaussian_nll,
    gaussian_quantile,
    per_bin_coverage,
    z_histogram,
)

B = 283


def _two_planets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    y = np.vstack([0.012 + 1e-4 * np.sin(np.arange(B) / 9), 0.021 + 2e-4 * np.cos(np.arange(B) / 15)])
    sigma = rng.uniform(4e-5, 3e-4, size=(2, B))
    mu = y + sigma * rng.normal(0, 1.3, size=(2, B))
    return y, mu, sigma


def _hand_score(y, mu, sigma, fgs_weight, naive_mean, naive_sigma, fgs_true=1e-6, airs_true=1e-5) -> float:
    """Value-by-value transcription of ariel_data.md section 3.1 with the math module."""
    num = den = 0.0
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            s_pred = max(sigma[i, j], 1e-15)
            s_true = fgs_true if j == 0 else airs_true
            gll_pred = -0.5 * math.log(2 * math.pi) - math.log(s_pred) - 0.5 * ((y[i, j] - mu[i, j]) / s_pred) ** 2
            gll_true = -0.5 * math.log(2 * math.pi) - math.log(s_true)
            gll_mean = (-0.5 * math.log(2 * math.pi) - math.log(naive_sigma)
                        - 0.5 * ((y[i, j] - naive_mean) / naive_sigma) ** 2)
            w = fgs_weight if j == 0 else 1.0
            num += w * (gll_pred - gll_mean) / (gll_true - gll_mean)
            den += w
    return min(max(num / den, 0.0), 1.0)


def _kaggle_style_score(solution: pd.DataFrame, submission: pd.DataFrame, naive_mean, naive_sigma,
                        fgs_weight, fsg_sigma_true=1e-6, airs_sigma_true=1e-5) -> float:
    """The published metric's structure: DataFrames, scipy logpdf, weighted average, clip."""
    sol = solution.drop(columns="planet_id").to_numpy()
    sub = submission.drop(columns="planet_id").to_numpy()
    n = sol.shape[1]
    y_pred, sigma_pred = sub[:, :n], np.clip(sub[:, n:], 1e-15, np.inf)
    sigma_true = np.append(np.array([fsg_sigma_true]), np.ones(n - 1) * airs_sigma_true)
    gll_pred = norm.logpdf(sol, loc=y_pred, scale=sigma_pred)
    gll_true = norm.logpdf(sol, loc=sol, scale=sigma_true * np.ones_like(sol))
    gll_mean = norm.logpdf(sol, loc=naive_mean * np.ones_like(sol), scale=naive_sigma * np.ones_like(sol))
    ind_scores = (gll_pred - gll_mean) / (gll_true - gll_mean)
    weights = np.append(np.array([fgs_weight]), np.ones(n - 1)) * np.ones_like(sol)
    return float(np.clip(np.average(ind_scores, weights=weights), 0.0, 1.0))


def test_score_matches_hand_computed_two_planet_case():
    y, mu, sigma = _two_planets()
    naive_mean, naive_sigma = float(np.mean(y)), float(np.std(y))
    expected = _hand_score(y, mu, sigma, 57.846, naive_mean, naive_sigma)
    assert 0.0 < expected < 1.0
    assert challenge_score(y, mu, sigma) == pytest.approx(expected, rel=1e-12)
    assert challenge_score(y, mu, sigma, naive_mean=naive_mean, naive_sigma=naive_sigma) == pytest.approx(
        expected, rel=1e-12)


def test_score_matches_kaggle_style_implementation_for_several_weights():
    y, mu, sigma = _two_planets()
    ids = [11, 22]
    solution = pd.DataFrame(y, columns=[f"wl_{i + 1}" for i in range(B)]).assign(planet_id=ids)
    submission = pd.concat([pd.DataFrame(mu, columns=[f"wl_{i + 1}" for i in range(B)]),
                            pd.DataFrame(sigma, columns=[f"sigma_{i + 1}" for i in range(B)])], axis=1)
    submission.insert(0, "planet_id", ids)
    for weight in (1.0, 57.846):
        oracle = _kaggle_style_score(solution, submission, 0.016, 0.0045, weight)
        mine = challenge_score(y, mu, sigma, fgs_weight=weight, naive_mean=0.016, naive_sigma=0.0045)
        assert mine == pytest.approx(oracle, rel=1e-12)


def test_perfect_prediction_with_sigma_true_scores_one():
    y, _, _ = _two_planets()
    sigma = np.full_like(y, 1e-5)
    sigma[:, 0] = 1e-6
    assert challenge_score_raw(y, y, sigma) == pytest.approx(1.0, abs=1e-12)
    assert challenge_score(y, y, sigma) == 1.0


def test_naive_prediction_scores_zero():
    y, _, _ = _two_planets()
    mean, std = float(np.mean(y)), float(np.std(y))
    raw = challenge_score_raw(y, np.full_like(y, mean), np.full_like(y, std))
    assert raw == pytest.approx(0.0, abs=1e-12)


def test_score_is_clipped_to_unit_interval():
    y, mu, sigma = _two_planets()
    terrible = challenge_score_raw(y, mu + 0.01, sigma)
    assert terrible < 0 and challenge_score(y, mu + 0.01, sigma) == 0.0
    overconfident = np.full_like(y, 1e-7)              # exact mu, sigma below sigma_true -> s > 1
    assert challenge_score_raw(y, y, overconfident) > 1 and challenge_score(y, y, overconfident) == 1.0
    # sigma clipped at 1e-15: an exact prediction with sigma 0 stays finite
    assert challenge_score(y, y, np.zeros_like(y)) == 1.0


def test_fgs_weight_weights_bin_zero_only():
    y, mu, sigma = _two_planets()
    good = sigma.copy()
    good[:, 0] = 1e-6
    mu_good = mu.copy()
    mu_good[:, 0] = y[:, 0]                          # FGS1 perfect: s = 1 there
    light = challenge_score_raw(y, mu_good, good, fgs_weight=1.0)
    heavy = challenge_score_raw(y, mu_good, good, fgs_weight=57.846)
    airs_mean = (light * B - 1.0) / (B - 1)          # mean s over AIRS values
    assert heavy == pytest.approx((57.846 * 1.0 + (B - 1) * airs_mean) / (57.846 + B - 1), rel=1e-10)


def test_constant_labels_need_an_explicit_naive_sigma():
    y = np.full((2, B), 0.01)
    with pytest.raises(ValueError, match="naive_sigma"):
        challenge_score(y, y, np.full_like(y, 1e-5))
    assert challenge_score(y, y, np.full_like(y, 1e-5), naive_sigma=1e-3) > 0.9


def test_nll_matches_formula():
    y, mu, sigma = _two_planets()
    expected = np.mean(0.5 * np.log(2 * np.pi * sigma**2) + 0.5 * ((y - mu) / sigma) ** 2)
    assert gaussian_nll(y, mu, sigma) == pytest.approx(expected, rel=1e-12)


def test_coverage_thresholds_and_per_bin():
    assert gaussian_quantile(0.68) == pytest.approx(0.99446, abs=1e-5)
    assert gaussian_quantile(0.95) == pytest.approx(1.95996, abs=1e-5)
    z = np.array([[0.5, 1.0, -2.0], [0.99, -0.999, 3.0]])
    assert coverage(z, 0.68) == pytest.approx(2 / 6)
    assert coverage(z, 0.95) == pytest.approx(4 / 6)
    np.testing.assert_allclose(per_bin_coverage(z, 0.68), [1.0, 0.0, 0.0])


def test_ece_small_for_calibrated_large_for_overconfident():
    z = np.random.default_rng(0).standard_normal(200_000)
    assert expected_calibration_error(z) < 0.005
    wide = expected_calibration_error(2.0 * z)
    assert wide > 0.15
    nominal = np.asarray(ECE_LEVELS)
    expected = np.mean(np.abs(2 * norm.cdf(norm.ppf(0.5 + nominal / 2) / 2.0) - 1 - nominal))
    assert wide == pytest.approx(expected, abs=0.005)


def test_z_histogram_counts_everything():
    z = np.array([-10.0, -0.1, 0.2, 7.0])
    hist = z_histogram(z)
    assert sum(hist["counts"]) == 4
    assert hist["counts"][0] == 1 and hist["counts"][-1] == 1
    assert sum(hist["normal"]) == pytest.approx(4 * (norm.cdf(6) - norm.cdf(-6)))


def test_evaluate_is_complete_and_json_ready():
    y, mu, sigma = _two_planets()
    m = evaluate(y, mu, sigma)
    for key in ("challenge_score", "challenge_score_raw", "nll", "coverage_68", "coverage_95", "ece",
                "z_mean", "z_std", "per_bin_coverage_68", "calibration_curve", "z_histogram",
                "naive_mean", "naive_sigma"):
        assert key in m
    assert len(m["per_bin_coverage_68"]) == B
    assert m["n_values"] == 2 * B
    json.dumps(m)
    single = evaluate(y[0], mu[0], sigma[0])
    assert single["n_planets"] == 1
