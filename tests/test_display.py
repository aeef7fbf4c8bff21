"""calib_core.display: the app's display options applied to typed plot data (units, binning, stretch, clip)."""

from __future__ import annotations

import numpy as np
import pytest

from calib_core.diagnostics import DEPTH_LABEL, Histogram, Image, Series, break_between
from calib_core.display import Display, apply_display, bin_depths


def _spectrum(rng):
    inst = np.r_[np.zeros(1, int), np.ones(11, int)]
    wl = np.r_[0.7, np.linspace(1.95, 3.9, 11)]
    mu = 0.015 + 1e-4 * rng.standard_normal(12)
    sigma = 1e-4 * (1 + rng.random(12))
    gap = break_between(inst, wl)
    return Series("Transmission spectrum", gap(wl, True), gap(mu), ylabel=DEPTH_LABEL, yerr=gap(sigma),
                  label="fitted", overlay=[Series("", gap(wl, True), gap(mu * 0 + 0.015), label="truth")]), \
        wl, mu, sigma


def test_binning_is_the_inverse_variance_mean_within_each_instrument():
    rng = np.random.default_rng(1)
    spectrum, wl, mu, sigma = _spectrum(rng)
    x, y, e = bin_depths(spectrum.x, spectrum.y, spectrum.yerr, 4)
    # FGS1 (1 channel) | gap | AIRS-CH0 11 channels in bins of 4, 4, 3
    assert len(x) == 1 + 1 + 3 and np.isnan(y[1]) and np.isnan(e[1])
    assert y[0] == pytest.approx(mu[0]) and e[0] == pytest.approx(sigma[0])
    for k, (a, b) in enumerate([(1, 5), (5, 9), (9, 12)]):
        w = 1 / sigma[a:b] ** 2
        assert y[2 + k] == pytest.approx(np.sum(w * mu[a:b]) / w.sum(), rel=1e-12)
        assert e[2 + k] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-12)
        assert x[2 + k] == pytest.approx(wl[a:b].mean())
    # a channel without a value takes no part; n = 1 changes nothing
    y_missing = spectrum.y.copy()
    y_missing[3] = np.nan
    _, y2, _ = bin_depths(spectrum.x, y_missing, spectrum.yerr, 4)
    w = 1 / sigma[[1, 3, 4]] ** 2
    assert y2[2] == pytest.approx(np.sum(w * mu[[1, 3, 4]]) / w.sum())
    same = bin_depths(spectrum.x, spectrum.y, spectrum.yerr, 1)
    np.testing.assert_array_equal(same[1], spectrum.y)
    empty = bin_depths(np.empty(0), np.empty(0), np.empty(0), 4)       # a run without channels: nothing to bin
    assert [a.size for a in empty] == [0, 0, 0]


def test_depth_unit_and_binning_apply_to_every_layer():
    spectrum, _, mu, _ = _spectrum(np.random.default_rng(2))
    shown = apply_display(spectrum, Display(depth_unit="ppm", bin_channels=4))
    assert shown.ylabel == "depth (ppm)" and shown.title == "Transmission spectrum (binned by 4 channels)"
    assert shown.y[0] == pytest.approx(mu[0] * 1e6) and len(shown.overlay) == 1
    assert shown.overlay[0].y[2] == pytest.approx(0.015e6) and len(shown.overlay[0].y) == len(shown.y)
    assert spectrum.ylabel == DEPTH_LABEL and spectrum.y[0] == mu[0]          # the original is untouched
    other = Series("White light", np.arange(3.0), np.ones(3), ylabel="normalised flux")
    assert apply_display(other, Display(depth_unit="ppm", bin_channels=4)) is other


def test_histogram_scale_and_image_stretch_and_clip():
    hist = Histogram("h", counts=np.array([1, 100, 3]), edges=np.arange(4.0), logy=True)
    assert apply_display(hist, Display()) is hist
    assert apply_display(hist, Display(hist_scale="linear")).logy is False
    data = np.arange(10000, dtype=np.float64).reshape(100, 100)
    data[0, 0] = np.nan
    img = Image("frame", data)
    assert apply_display(img, Display()) is img
    shown = apply_display(img, Display(stretch="log", clip=True))
    finite = data[np.isfinite(data)]
    assert shown.stretch == "log" and shown.clim == pytest.approx(tuple(np.percentile(finite, [1, 99])))
    flat = apply_display(Image("flat", np.ones((4, 4))), Display(clip=True))
    assert flat.clim is None                                 # no range to clip to: the data's own


@pytest.mark.parametrize("kwargs, message", [
    ({"hist_scale": "logarithmic"}, "display hist_scale = 'logarithmic': expected one of auto, log, linear"),
    ({"stretch": "sqrt"}, "display stretch = 'sqrt': expected one of linear, log, eq_hist"),
    ({"depth_unit": "percent"}, "display depth_unit = 'percent': expected one of"),
    ({"bin_channels": 0}, "display bin_channels = 0: expected an integer >= 1"),
])
def test_bad_display_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Display(**kwargs)
