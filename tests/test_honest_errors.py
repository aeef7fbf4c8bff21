"""Honest depth errors at low signal-to-noise, and errors near the photon + read-noise limit.

Kernel tests on simulated light curves (fast), then end-to-end regimes on small demo planets
(a sparse cadence and a faint star, several seeds each) run through the nominal profile.
"""

from __future__ import annotations

import numpy as np
import pytest

from calib_core.stages import depths
from calib_core.transit import Geometry, light_curve

GEOMETRY = Geometry(3.6, 4.2, 9.5, 88.6)


def _noisy_curves(seed: int, n_chan: int = 60, n_time: int = 400, noise: float = 0.01,
                  depth: float = 0.012) -> tuple[depths.Curves, np.ndarray]:
    """Channels of one transit with white noise ``noise`` per sample (depth S/N about 1 per channel)."""
    rng = np.random.default_rng(seed)
    time_h = np.linspace(0.0, 7.5, n_time)
    wl = np.linspace(1.95, 3.9, n_chan)
    x = (1 / wl - 1 / wl.max()) / (1 / wl.min() - 1 / wl.max())
    truth = depth + 2e-4 * np.sin(3 * wl)
    flux = light_curve(time_h, GEOMETRY, truth, 0.15 + 0.3 * x, 0.08 + 0.15 * x)
    flux = flux + rng.normal(0.0, noise, flux.shape)
    return depths.Curves(time_h, flux, np.full(flux.shape, noise ** -2), 0.0, wl), truth


def test_low_snr_channels_keep_their_variance():
    """Per-channel S/N ~ 1: estimates near or below zero and a loosely constrained limb-darkening law.

    Neither may collapse a channel's error: the transit shape is linearised at a
    physical radius ratio and the smooth law stays physical (before, some channels
    got errors 100 to 1000 times too small and the z std was in the hundreds).
    """
    z, ratio, low = [], [], 0
    for seed in range(4):
        curves, truth = _noisy_curves(seed, noise=0.08)
        fit = depths.fit_channels(curves, GEOMETRY, np.sqrt(0.012), depths.LimbDarkeningConfig(), 2, (0.3, 0.15))
        sd = np.sqrt(fit.var_stat)
        ratio.append(sd / np.median(sd))
        z.append((fit.depth - truth) / sd)
        low += int(np.count_nonzero(fit.depth < 0.012 / 4))
    z, ratio = np.concatenate(z), np.concatenate(ratio)
    assert low > 0.1 * z.size                                     # the regime: many noise-dominated estimates
    assert ratio.min() > 0.5 and ratio.max() < 2.0                 # no channel's error collapses
    assert 0.8 < np.std(z) < 1.25


def test_noise_limit_matches_the_box_formula():
    """Box transit, equal weights: var(depth) = sigma^2 (1/N_in + (1 - depth)^2 / N_out) exactly."""
    from calib_core.noise_limit import depth_noise_limit

    n_in, n_out, sigma, depth = 120, 380, 2e-3, 0.02
    template = np.r_[np.ones(n_in), np.zeros(n_out)]
    weight = np.full((n_in + n_out, 2), sigma ** -2)
    weight[:5, 1] = 0.0                                     # unusable samples carry no information
    got = depth_noise_limit(np.column_stack([template, template]), weight, np.array([depth, depth]))
    np.testing.assert_allclose(got[0], sigma * np.sqrt(1 / n_in + (1 - depth) ** 2 / n_out), rtol=1e-12)
    np.testing.assert_allclose(got[1], sigma * np.sqrt(1 / (n_in - 5) + (1 - depth) ** 2 / n_out), rtol=1e-12)
    assert np.isnan(depth_noise_limit(np.zeros(50), np.ones(50), 0.01)).all()   # no transit, no information


def test_fit_channels_reports_a_limit_below_its_errors():
    """The data-derived limit sits below the fitted errors, by about the price of the fitted nuisances."""
    curves, _ = _noisy_curves(7, noise=0.004)
    fit = depths.fit_channels(curves, GEOMETRY, np.sqrt(0.012), depths.LimbDarkeningConfig(), 2, (0.3, 0.15))
    ratio = np.sqrt(fit.var_stat) / fit.sigma_limit
    assert np.all(ratio > 1.0) and np.median(ratio) < 2.5


def test_shared_baseline_fit_reduces_to_the_free_fit_and_shares_the_quadratic():
    """With one basis function per channel the joint fit is the per-channel fit, to rounding; with a smooth
    basis the depth errors shrink, and the fitted shared quadratic follows the injected one."""
    from calib_core.shared_baseline import fit_shared_multiplicative

    rng = np.random.default_rng(1)
    m, c = 300, 12
    t = np.linspace(0.0, 7.5, m)
    design = depths.baseline_design(t, 2)
    shape = light_curve(t, GEOMETRY, [0.01], [0.3], [0.15])[:, 0]
    templates = np.broadcast_to((1 - shape) / 0.01, (c, 1, m)).copy()
    x = np.linspace(-1, 1, c)
    quad = 2e-3 * (1 + 0.5 * x)                                     # smooth in the channel coordinate
    coef = np.column_stack([np.ones(c), rng.normal(0, 1e-3, c), quad])
    y = (design @ coef.T) * (1 - 0.01 * templates[:, 0].T) + rng.normal(0, 5e-4, (m, c))
    w = np.full((m, c), 4e6)
    w[5:9, 2] = 0.0
    free = depths.fit_multiplicative(y, w, design, templates)
    same = fit_shared_multiplicative(y, w, design[:, :2], design[:, 2:], np.eye(c), templates)
    np.testing.assert_allclose(same.gamma, free.gamma, rtol=0, atol=1e-12)
    own = [0, 1, 3]                                                   # free covariance without the quadratic
    np.testing.assert_allclose(same.cov, free.cov[:, own][:, :, own], rtol=1e-8)
    smooth = fit_shared_multiplicative(y, w, design[:, :2], design[:, 2:], np.polynomial.legendre.legvander(x, 1),
                                       templates)
    ratio = np.sqrt(smooth.cov[:, 2, 2] / free.cov[:, 3, 3])
    assert np.all(ratio < 0.9)
    fitted = (np.polynomial.legendre.legvander(x, 1) @ smooth.eta.T)[:, 0]
    assert np.max(np.abs(fitted - quad)) < 4 * np.sqrt(np.max(np.diag(smooth.eta_cov)))


def test_free_degree_covers_the_trace_trend():
    from calib_core.stages import trace

    fit = depths.FitConfig()
    assert depths.channel_free_degree(fit) == 1
    tcfg = trace.TraceConfig()
    assert depths.channel_free_degree(fit, tcfg) == 2                # trace default: quadratic per channel
    tcfg.along_time.poly.degree = 1
    assert depths.channel_free_degree(fit, tcfg) == 1
    tcfg.along_time.method = "spline"
    assert depths.channel_free_degree(fit, tcfg) == fit.baseline_degree
    tcfg.along_time.enabled = False
    assert depths.channel_free_degree(fit, tcfg) == 1
