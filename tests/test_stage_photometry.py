"""Photometry stage: kernels against photutils/astropy oracles, recovery of injected fluxes, the fast
(read-pair) path, configuration, and the detector chain on a demo planet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.stats import SigmaClip, sigma_clipped_stats
from omegaconf import OmegaConf
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_com
from scipy.special import ndtr

from calib_core.config.base import ConfigError, check_constraints
from calib_core.dq import DQ
from calib_core.frames import FrameAxisMeta
from calib_core.robust import sigma_clip_stats
from oracles.robust import sigma_clip_stats_numpy
from calib_core.stages.photometry.centroid import centroid_2d
from calib_core.stages.photometry.config import PhotometryConfig
from calib_core.stages.photometry.flags import PhotFlag
from calib_core.stages.photometry.geometry import circle_overlap, circle_subpixel_overlap
from calib_core.stages.photometry.step import STAGE
from calib_core.store import StoreWriter
from stagectx import Setting

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "calib" / "photometry.yaml"
READ = 15.0


# ---------------------------------------------------------------------------
# synthetic scenes (independent of the package's PSF code)
# ---------------------------------------------------------------------------


def _gauss_pix(centre: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """(len(centre), n) fraction of a 1-D Gaussian in each pixel (exact)."""
    edges = np.arange(n + 1) - 0.5
    return np.diff(ndtr((edges[None, :] - np.asarray(centre)[:, None]) / sigma), axis=1)


def _moffat_pix(x: np.ndarray, y: np.ndarray, alpha: float, beta: float, shape, sub: int = 9) -> np.ndarray:
    """(n, H, W) Moffat pixel fractions by ``sub x sub`` midpoint supersampling."""
    h, w = shape
    off = (np.arange(sub) + 0.5) / sub - 0.5
    out = np.zeros((len(x), h, w))
    norm = (beta - 1.0) / (np.pi * alpha**2)
    for oy in off:
        dy2 = (np.arange(h)[None, :, None] + oy - np.asarray(y)[:, None, None]) ** 2
        for ox in off:
            dx2 = (np.arange(w)[None, None, :] + ox - np.asarray(x)[:, None, None]) ** 2
            out += norm * (1.0 + (dx2 + dy2) / alpha**2) ** (-beta)
    return out / sub**2


def _fgs_truth(x, y, flux, shape=(32, 32), sigma=1.2, alpha=2.0, beta=4.0, frac=0.7):
    """Gaussian + Moffat PSF (unit integral each) times ``flux``: (n, H, W) electrons."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    gauss = _gauss_pix(y, sigma, shape[0])[:, :, None] * _gauss_pix(x, sigma, shape[1])[:, None, :]
    return np.asarray(flux, float)[:, None, None] * (frac * gauss + (1 - frac) * _moffat_pix(x, y, alpha, beta, shape))


def _noisy(rng, truth, sky=0.0):
    var = READ**2 + np.clip(truth + sky, 0, None)
    return truth + sky + rng.standard_normal(truth.shape) * np.sqrt(var), var


def _store(path, data, var, dq=None, time_s=None, read_kind=None, extra=None, meta=None):
    n = len(data)
    kind = np.full(n, 2, np.int8) if read_kind is None else np.asarray(read_kind, np.int8)
    axis = FrameAxisMeta(np.arange(n, dtype=float) if time_s is None else np.asarray(time_s, float),
                         np.full(n, 0.1), kind)
    with StoreWriter(path) as w:
        d, v, q = w.create_frames(n, data.shape[1:])
        d[:], v[:] = data, var
        if dq is not None:
            q[:] = dq
        for name, arr in (extra or {}).items():
            w.put(name, arr)
        axis.write(w)
        return w.commit(meta or {}).frames()


def _run(src, cfg, instrument, out_dir, planet=None, chunk_frames=64):
    ctx = Setting(planet, instrument, {}, chunk_frames=chunk_frames)
    with StoreWriter(out_dir) as w:
        metrics = STAGE.run(src, cfg, ctx.context("photometry"), w)
        out = w.commit({"metrics": metrics})
    return out, metrics


def _cfg(**kw) -> PhotometryConfig:
    cfg = PhotometryConfig()
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


# ---------------------------------------------------------------------------
# kernels vs oracles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0.4, 1.0, 3.7, 8.0, 15.5])
def test_circle_overlap_matches_photutils_masks(r):
    rng = np.random.default_rng(int(r * 10))
    x, y = rng.uniform(8, 24, 6), rng.uniform(8, 24, 6)
    exact = circle_overlap(x, y, r, (32, 32))
    sub = circle_subpixel_overlap(x, y, r, (32, 32), 5)
    centre = circle_subpixel_overlap(x, y, r, (32, 32), 1)
    for k in range(6):
        ap = CircularAperture((x[k], y[k]), r)
        np.testing.assert_allclose(exact[k], ap.to_mask(method="exact").to_image((32, 32)), atol=1e-12)
        np.testing.assert_allclose(sub[k], ap.to_mask(method="subpixel", subpixels=5).to_image((32, 32)), atol=1e-12)
        np.testing.assert_array_equal(centre[k], ap.to_mask(method="center").to_image((32, 32)))


def test_sigma_clip_stats_matches_astropy():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, (60, 250))
    x[:, :12] += rng.uniform(10, 200, (60, 12))
    x[rng.random(x.shape) < 0.15] = np.nan
    st = sigma_clip_stats(x, sigma=3.0, maxiters=10)
    for i in range(60):
        mean, med, std = sigma_clipped_stats(x[i][np.isfinite(x[i])], sigma=3.0, maxiters=10)
        assert np.isclose(st.median[i], med) and np.isclose(st.mean[i], mean) and np.isclose(st.std[i], std)


@pytest.mark.parametrize("maxiters", [0, 1, 3, 10])
def test_compiled_sigma_clip_stats_equals_the_numpy_statement_bit_for_bit(maxiters):
    rng = np.random.default_rng(7)
    x = rng.normal(5.0, 2.0, (4, 50, 37))
    x[:, :, :5] += rng.uniform(10, 200, (4, 50, 5))             # outliers to clip
    x[rng.random(x.shape) < 0.2] = np.nan
    x[0, 0] = np.nan                                             # an empty row
    x[0, 1, :] = 3.0                                             # all ties
    x[0, 2, 1:] = np.nan                                         # one value
    x[0, 3, :4] = [np.inf, -np.inf, np.inf, np.nan]              # infinities sort like numpy's
    x[1, :, ::3] = np.round(x[1, :, ::3])                        # ties at the clipping bounds
    for sigma in (1.5, 3.0):
        fast, slow = sigma_clip_stats(x, sigma=sigma, maxiters=maxiters), \
            sigma_clip_stats_numpy(x, sigma=sigma, maxiters=maxiters)
        for name in ("median", "mean", "std", "count", "kept"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=f"{name} sigma={sigma}")
    empty = sigma_clip_stats(np.zeros((3, 0)))
    assert empty.count.tolist() == [0, 0, 0] and np.isnan(empty.median).all() and empty.kept.shape == (3, 0)


def test_centroids_against_photutils_and_truth():
    rng = np.random.default_rng(4)
    x, y = 15 + rng.uniform(-0.5, 0.5, 20), 15 + rng.uniform(-0.5, 0.5, 20)
    img = _fgs_truth(x, y, np.full(20, 1e5), frac=1.0)          # pure Gaussian
    cx, cy, failed = centroid_2d(img, 15, 15, 11, "com")
    for k in range(3):
        ref = centroid_com(img[k, 10:21, 10:21])
        np.testing.assert_allclose([cx[k] - 10, cy[k] - 10], ref, atol=1e-10)
    gx, gy, gfail = centroid_2d(img, 15, 15, 11, "gaussian2d")
    assert not gfail.any()
    np.testing.assert_allclose(gx, x, atol=2e-3)
    np.testing.assert_allclose(gy, y, atol=2e-3)
    qx, qy, qfail = centroid_2d(img, 15, 15, 11, "quadratic")
    assert not qfail.any()
    np.testing.assert_allclose(qx, x, atol=0.06)
    np.testing.assert_allclose(qy, y, atol=0.06)


@pytest.mark.parametrize("exact", [True, False])
def test_fgs_aperture_sums_match_photutils(tmp_path, exact):
    rng = np.random.default_rng(5)
    n = 24
    x, y = 15.3 + rng.normal(0, 0.2, n), 15.6 + rng.normal(0, 0.2, n)
    data, var = _noisy(rng, _fgs_truth(x, y, np.full(n, 2e5)), sky=12.0)
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32))
    cfg = _cfg(aperture__radius_px=7.5, aperture__exact=exact, background__method="none")
    out, _ = _run(src, cfg, "FGS1", tmp_path / "none")
    d = np.asarray(src.data, float)
    cx, cy = np.asarray(out.fields["photometry_centroid_x"]), np.asarray(out.fields["photometry_centroid_y"])
    method = {"method": "exact"} if exact else {"method": "subpixel", "subpixels": 5}
    ref = [aperture_photometry(d[k], CircularAperture((cx[k], cy[k]), 7.5), **method)["aperture_sum"][0]
           for k in range(n)]
    np.testing.assert_allclose(out.fields["photometry_flux"][:, 0], ref, rtol=1e-6)
    if not exact:
        return
    # annulus background: sigma-clipped median of the annulus around the reference centroid (photutils'
    # ApertureStats uses the "center" mask for statistics), and flux = sum - sky * aperture area
    cfg = _cfg(aperture__radius_px=7.5, background__method="annulus", background__inner_px=10.0,
               background__outer_px=14.0, background__maxiters=5)
    out, metrics = _run(src, cfg, "FGS1", tmp_path / "annulus")
    xr, yr = out.meta["reference"]["x"], out.meta["reference"]["y"]
    clip = SigmaClip(sigma=3.0, maxiters=5)
    sky = [ApertureStats(d[k], CircularAnnulus((xr, yr), 10.0, 14.0), sigma_clip=clip).median for k in range(n)]
    np.testing.assert_allclose(out.fields["photometry_sky"][:, 0], sky, rtol=1e-9)
    cx, cy = np.asarray(out.fields["photometry_centroid_x"]), np.asarray(out.fields["photometry_centroid_y"])
    ref = [aperture_photometry(d[k], CircularAperture((cx[k], cy[k]), 7.5))["aperture_sum"][0] for k in range(n)]
    area = np.pi * 7.5**2
    np.testing.assert_allclose(out.fields["photometry_flux"][:, 0], np.asarray(ref) - np.asarray(sky) * area,
                               rtol=1e-6)
    assert abs(metrics["sky_median"] - 12.0) < 1.0


def test_mesh_background_follows_a_sky_gradient(tmp_path):
    rng = np.random.default_rng(13)
    n = 60
    yy, xx = np.mgrid[0:32, 0:32]
    sky = 20.0 + 0.6 * (xx - 15.5) - 0.4 * (yy - 15.5)                # e- per pixel
    truth = _fgs_truth(np.full(n, 15.4), np.full(n, 15.6), np.full(n, 5e4))
    data, var = _noisy(rng, truth + sky, sky=0.0)
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32))
    cfg = _cfg(aperture__radius_px=7.0, background__method="mesh", background__mesh_box_px=8,
               background__inner_px=7.0)
    out, metrics = _run(src, cfg, "FGS1", tmp_path / "out")
    f = np.asarray(out.fields["photometry_flux"])[:, 0]
    inside = (circle_overlap(np.array([15.4]), np.array([15.6]), 7.0, (32, 32))[0] * truth[0]).sum()
    assert abs(f.mean() - inside) < 4 * f.std() / np.sqrt(n) + 1e-3 * inside
    assert abs(np.median(out.fields["photometry_sky"][:, 0]) - 20.0) < 0.5   # sky under the aperture
    assert metrics["background"] == "mesh"


# ---------------------------------------------------------------------------
# FGS1: recovery of injected fluxes and honest errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["aperture", "psf", "optimal"])
def test_fgs_methods_recover_flux_with_honest_errors(tmp_path, method):
    rng = np.random.default_rng(6)
    n, flux = 240, 1.0e5
    x, y = np.full(n, 15.35), np.full(n, 15.55)
    truth = _fgs_truth(x, y, np.full(n, flux))
    data, var = _noisy(rng, truth, sky=10.0)
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32))
    out, metrics = _run(src, _cfg(photometry__method=method, aperture__radius_px=10.0), "FGS1", tmp_path / "out")
    f = np.asarray(out.fields["photometry_flux"])[:, 0]
    err = np.sqrt(np.asarray(out.fields["photometry_flux_var"])[:, 0])
    inside = (circle_overlap(x[:1], y[:1], 10.0, (32, 32))[0] * truth[0]).sum()
    expected = inside if method == "aperture" else flux          # psf / optimal: total flux
    assert abs(f.mean() - expected) < 4 * f.std() / np.sqrt(n) + 3e-4 * expected
    assert 0.9 < f.std() / np.median(err) < 1.1          # propagated error vs measured scatter
    assert metrics["flagged_fraction"] == 0.0
    assert out.fields["photometry_flags"].dtype == np.uint16


def test_fgs_jitter_and_dead_core_pixel_do_not_leak_into_flux(tmp_path):
    rng = np.random.default_rng(7)
    n, flux = 240, 2.0e5
    x, y = 15.3 + rng.normal(0, 0.15, n), 15.5 + rng.normal(0, 0.15, n)
    data, var = _noisy(rng, _fgs_truth(x, y, np.full(n, flux)), sky=5.0)
    dq = np.zeros(data.shape, np.uint16)
    dq[:, 15, 16] = DQ.DEAD                                  # next to the PSF peak, in every frame
    data[:, 15, 16] = 0.0
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32), dq)
    for method in ("aperture", "psf", "optimal"):
        out, metrics = _run(src, _cfg(photometry__method=method), "FGS1", tmp_path / method)
        f = np.asarray(out.fields["photometry_flux"])[:, 0]
        err = np.sqrt(np.asarray(out.fields["photometry_flux_var"])[:, 0])
        slope = np.linalg.lstsq(np.column_stack([np.ones(n), x - x.mean(), y - y.mean()]), f / f.mean(),
                                rcond=None)[0][1:]
        assert np.all(np.abs(slope) < 3e-3), (method, slope)    # < 0.3% per pixel of jitter
        assert 0.85 < f.std() / np.median(err) < 1.15, method
        np.testing.assert_array_equal(out.fields["n_bad_pixels"][:, 0], 1)
        np.testing.assert_allclose(out.fields["photometry_centroid_x"], x, atol=0.05)
        assert metrics["n_bad_pixels_replaced"] == n


def test_optimal_beats_large_aperture_on_faint_star(tmp_path):
    rng = np.random.default_rng(8)
    n, flux = 300, 2500.0
    truth = _fgs_truth(np.full(n, 15.4), np.full(n, 15.4), np.full(n, flux))
    data, var = _noisy(rng, truth, sky=4.0)
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32))
    ap, _ = _run(src, _cfg(aperture__radius_px=10.0), "FGS1", tmp_path / "ap")
    opt, _ = _run(src, _cfg(photometry__method="optimal"), "FGS1", tmp_path / "opt")
    f_ap, f_opt = ap.fields["photometry_flux"][:, 0], opt.fields["photometry_flux"][:, 0]
    assert f_opt.std() < 0.7 * f_ap.std()
    assert abs(f_opt.mean() - flux) < 4 * f_opt.std() / np.sqrt(n)


def test_fgs_flags(tmp_path):
    rng = np.random.default_rng(9)
    n = 60
    x, y = np.full(n, 15.4), np.full(n, 15.4)
    x[10] += 3.0                                              # off centre
    data, var = _noisy(rng, _fgs_truth(x, y, np.full(n, 1e5)), sky=5.0)
    dq = np.zeros(data.shape, np.uint16)
    dq[20, 14, 14] = DQ.SATURATED
    dq[30, 10:20, 12:18] = DQ.COSMIC_RAY                      # 60 pixels: too many bad
    dq[40] = DQ.UNPAIRED                                      # a frame the CDS stage could not pair
    data[40] = np.nan
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32), dq)
    out, metrics = _run(src, PhotometryConfig(), "FGS1", tmp_path / "out")
    flags = np.asarray(out.fields["photometry_flags"])[:, 0]
    assert flags[10] & PhotFlag.OFF_CENTRE and flags[20] & PhotFlag.SATURATED
    assert flags[30] & PhotFlag.TOO_MANY_BAD
    assert flags[40] & PhotFlag.UNPAIRED and flags[40] & PhotFlag.NONFINITE
    assert np.count_nonzero(flags) == 4
    assert metrics["n_nonfinite"] == 0 and metrics["n_unpaired_samples"] == 1
    assert metrics["n_flagged"]["TOO_MANY_BAD"] == 2          # the missing frame is all bad too
    assert np.isfinite(out.fields["photometry_flux"][30, 0])


# ---------------------------------------------------------------------------
# AIRS-CH0 spectral extraction
# ---------------------------------------------------------------------------


def _airs_scene(rng, n, sigma=1.1, sky=30.0):
    cols = np.arange(356)
    spectrum = 1.5e4 * (1.2 + np.sin(cols / 23.0)) + 2e3          # e- per column per sample
    centre = 15.6 + 0.002 * (cols - 178)                          # slightly tilted trace
    prof = np.stack([_gauss_pix(centre[c:c + 1], sigma, 32)[0] for c in cols], axis=1)   # (32, 356)
    truth = np.broadcast_to(prof * spectrum, (n, 32, 356))
    data, var = _noisy(rng, truth, sky=sky)
    return data, var, spectrum, prof


@pytest.mark.parametrize("method", ["aperture", "optimal", "psf"])
def test_airs_extraction_recovers_column_fluxes_in_ascending_order(tmp_path, method):
    rng = np.random.default_rng(10)
    n = 120
    data, var, spectrum, prof = _airs_scene(rng, n)
    wl = np.linspace(4.08, 1.63, 356)                            # descending, like the detector
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32), meta={"wavelength_um": wl})
    cfg = _cfg(photometry__method=method, psf__model="gaussian")
    out, metrics = _run(src, cfg, "AIRS-CH0", tmp_path / "out")
    f = np.asarray(out.fields["photometry_flux"])
    err = np.sqrt(np.asarray(out.fields["photometry_flux_var"]))
    assert f.shape == (n, 282)
    np.testing.assert_allclose(out.fields["channel_wavelength_um"], wl[39:321][::-1])
    assert np.all(np.diff(out.fields["channel_wavelength_um"]) > 0)
    assert out.meta["wavelength_order"] == "ascending"
    cols = np.arange(39, 321)[::-1]
    if method == "aperture":
        box = np.clip(np.minimum(np.arange(32)[:, None] + 0.5, 15.6 + 0.002 * (cols - 178) + 6.5)
                      - np.maximum(np.arange(32)[:, None] - 0.5, 15.6 + 0.002 * (cols - 178) - 6.5), 0, 1)
        expected = (box * prof[:, cols]).sum(axis=0) * spectrum[cols]
    else:
        expected = spectrum[cols]
    pull = (f.mean(axis=0) - expected) / (f.std(axis=0) / np.sqrt(n))
    assert np.mean(pull**2) < 2.0 and np.max(np.abs(pull)) < 5.0
    ratio = f.std(axis=0) / np.median(err, axis=0)
    assert 0.9 < np.median(ratio) < 1.1
    assert abs(metrics["sky_median"] - 30.0) < 1.0
    assert abs(metrics["median_centroid_y"] - 15.6) < 0.05
    assert metrics["flagged_fraction"] == 0.0


# ---------------------------------------------------------------------------
# fast path: reads instead of CDS frames
# ---------------------------------------------------------------------------


def test_read_pairs_give_the_cds_fluxes(tmp_path):
    rng = np.random.default_rng(11)
    n = 240
    truth = _fgs_truth(np.full(n, 15.3), np.full(n, 15.5), np.full(n, 1e5)) + 3.0
    reset = 40.0 + rng.normal(0, 10.0, truth.shape)                # kTC / reset level, shared by the pair
    first_q = truth + rng.standard_normal(truth.shape) * np.sqrt(truth)
    increment = truth + rng.standard_normal(truth.shape) * np.sqrt(truth)
    first = reset + first_q + rng.normal(0, READ, truth.shape)
    signal = reset + first_q + increment + rng.normal(0, READ, truth.shape)
    reads = np.empty((2 * n + 1, 32, 32))
    reads[0:-1:2], reads[1::2], reads[-1] = first, signal, first[-1]        # + one orphan first read
    rvar = np.empty_like(reads)
    rvar[0:-1:2], rvar[1::2], rvar[-1] = READ**2 + truth, READ**2 + 2 * truth, READ**2 + truth[-1]
    t = np.concatenate([np.repeat(np.arange(n) * 0.4, 2) + np.tile([0.1, 0.2], n), [n * 0.4 + 0.1]])
    kind = np.concatenate([np.tile([0, 1], n), [0]])
    src_reads = _store(tmp_path / "reads", reads.astype(np.float32), rvar.astype(np.float32), time_s=t,
                       read_kind=kind, extra={"read_var": np.full((32, 32), READ**2, np.float32)})
    src_cds = _store(tmp_path / "cds", (signal - first).astype(np.float32),
                     (2 * READ**2 + truth).astype(np.float32), time_s=t[1:-1:2])
    cfg = _cfg(aperture__radius_px=6.0)
    out_r, m_r = _run(src_reads, cfg, "FGS1", tmp_path / "out_reads")
    out_c, m_c = _run(src_cds, cfg, "FGS1", tmp_path / "out_cds")
    assert m_r["sample_mode"] == "reads" and m_c["sample_mode"] == "cds"
    assert m_r["n_samples_out"] == n and m_r["n_unpaired_reads"] == 1
    np.testing.assert_allclose(out_r.fields["time_s"], t[1:-1:2])
    f_r, f_c = out_r.fields["photometry_flux"][:, 0], out_c.fields["photometry_flux"][:, 0]
    diff = f_r - f_c
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(n)
    assert diff.std() < 0.5 * f_c.std()                       # same photons, only the sky estimate differs
    err_r = np.sqrt(out_r.fields["photometry_flux_var"][:, 0])
    assert 0.85 < f_r.std() / np.median(err_r) < 1.15         # pair covariance handled (read_var)


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def test_yaml_and_dataclass_match_exactly():
    assert CONFIG.read_text().splitlines()[0] == "# @package calib.photometry"
    from_yaml = OmegaConf.load(CONFIG)
    schema = OmegaConf.structured(PhotometryConfig)
    assert OmegaConf.to_container(from_yaml) == OmegaConf.to_container(schema)
    merged = OmegaConf.to_object(OmegaConf.merge(schema, from_yaml))
    assert merged == PhotometryConfig()
    check_constraints(merged, "calib.photometry")
    # every leaf of the dataclass carries a comment in the YAML
    leaves = {f.name for f in dataclasses.fields(PhotometryConfig)}
    assert leaves <= set(from_yaml.keys())
    for line in CONFIG.read_text().splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, line


def test_seed_override_paths():
    schema = OmegaConf.structured(PhotometryConfig)
    over = OmegaConf.from_dotlist(["photometry.method=psf", "psf.model=gaussian_moffat", "aperture.radius_px=6"])
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, over))
    check_constraints(cfg, "calib.photometry")
    assert (cfg.photometry.method, cfg.psf.model, cfg.aperture.radius_px) == ("psf", "gaussian_moffat", 6.0)


@pytest.mark.parametrize("key, value, match", [
    ("aperture.radius_px", -1.0, "calib.photometry.aperture.radius_px"),
    ("photometry.method", "magic", "calib.photometry.photometry.method"),
    ("psf.model", "airy", "calib.photometry.psf.model"),
    ("centroid.box_px", 10, "calib.photometry.centroid.box_px"),
    ("background.outer_px", 5.0, "calib.photometry.background.outer_px"),
    ("airs.columns", [300, 39], "calib.photometry.airs.columns"),
    ("airs.sky_distance_rows", 6.0, "calib.photometry.airs.sky_distance_rows"),
])
def test_bad_config_values_name_the_key(key, value, match):
    cfg = PhotometryConfig()
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        check_constraints(cfg, "calib.photometry")


def test_background_method_must_fit_the_instrument(tmp_path):
    rng = np.random.default_rng(12)
    data, var = _noisy(rng, _fgs_truth(np.full(8, 15.0), np.full(8, 15.0), np.full(8, 1e4)))
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32))
    with pytest.raises(ConfigError, match=r"calib\.photometry\.background\.method"):
        _run(src, _cfg(background__method="rows"), "FGS1", tmp_path / "out")


# ---------------------------------------------------------------------------
# the detector chain on a demo planet
# ---------------------------------------------------------------------------


def _chain(planet, inst, stages, run_dir):
    from calib_core.stages import get_stage
    from calib_core.stages.base import RawInput

    inp, upstream, metrics = RawInput(planet, inst), {}, {}
    for name in stages:
        stage = get_stage(name)
        ctx = Setting(planet, inst, {}, upstream, chunk_frames=64)
        with StoreWriter(run_dir / name / inst) as w:
            metrics = stage.run(inp, stage.Config(), ctx.context(name), w)
            out = w.commit({"metrics": metrics})
        upstream[(name, inst)] = out
        inp = out.frames() if stage.output_kind == "frames" else out
    return inp, metrics


@pytest.mark.parametrize("profile", ["nominal", "fast"])
def test_demo_planet_chain_shows_the_transit_with_honest_errors(demo_root, tmp_path, profile):
    from calib_core.sim import load_truth
    from calib_core.io import open_planet

    planet = open_planet(demo_root)
    truth = load_truth(demo_root, planet.planet_id)
    stages = ("adc", "dark", "flat", "cds", "photometry") if profile == "nominal" else ("adc", "photometry")
    for inst in ("FGS1", "AIRS-CH0"):
        out, metrics = _chain(planet, inst, stages, tmp_path)
        assert metrics["sample_mode"] == ("cds" if profile == "nominal" else "reads")
        flux = np.asarray(out.fields["photometry_flux"])
        var = np.asarray(out.fields["photometry_flux_var"])
        factor = truth[f"{inst}_transit"] * truth[f"{inst}_drift"]
        if inst == "AIRS-CH0":
            factor = factor[:, 39:321][:, ::-1]
        model = (flux.mean(axis=0) * factor).sum(axis=1)            # truth white-light shape
        white, white_var = flux.sum(axis=1), var.sum(axis=1)
        scale = np.sum(white * model / white_var) / np.sum(model**2 / white_var)
        chi = (white - scale * model) / np.sqrt(white_var)
        robust_std = 1.4826 * np.median(np.abs(chi - np.median(chi)))   # fast: cosmic rays are not removed
        assert 0.6 < robust_std < 1.6, (inst, robust_std)
        norm = white / np.median(white[model > np.percentile(model, 80)])
        in_transit = model < model.min() + 0.2 * (model.max() - model.min())
        depth_true = 1 - model[in_transit].mean() / np.median(model[model > np.percentile(model, 80)])
        depth = 1 - norm[in_transit].mean()
        depth_err = np.sqrt(np.mean(white_var[in_transit]) / in_transit.sum()) / np.median(white)
        assert depth_true > 0.005 and abs(depth - depth_true) < 5 * depth_err + 1e-3, (inst, depth, depth_true)
        assert metrics["n_nonfinite"] == 0
        gates = {g.name: g for g in STAGE.gates(metrics, PhotometryConfig())}
        assert gates["robust_std_sanity"].passed and gates["centroid_in_bounds"].passed
        plots = STAGE.diagnostics(out, metrics, None)
        kinds = {p.kind for p in plots}
        assert {"curve", "image", "histogram", "table"} <= kinds
        assert all(len(p.x) <= 2000 for p in plots if p.kind == "curve")


def test_blocks_measured_in_threads_equal_one_at_a_time(tmp_path, monkeypatch):
    """Photometry measures two blocks at once (``MEASURE_THREADS``): every output equals the one-thread run."""
    import calib_core.stages.photometry.step as step

    rng = np.random.default_rng(11)
    data, var, _, _ = _airs_scene(rng, 96)
    src = _store(tmp_path / "in", data.astype(np.float32), var.astype(np.float32),
                 meta={"wavelength_um": np.linspace(4.08, 1.63, 356)})
    monkeypatch.setattr(step, "PIXEL_BUDGET", 8 * 32 * 356)          # 8 samples per block: 12 blocks
    outs = {}
    for threads in (1, 2):
        monkeypatch.setattr(step, "MEASURE_THREADS", threads)
        outs[threads], _ = _run(src, _cfg(), "AIRS-CH0", tmp_path / f"out{threads}")
    for name, arr in outs[1].fields.items():
        np.testing.assert_array_equal(np.asarray(outs[2].fields[name]), np.asarray(arr), err_msg=name)
