"""Synthetic Ariel planet in the exact 2025 Kaggle layout, with its ground truth.

:func:`make_demo` writes one planet (FGS1 and AIRS-CH0 raw reads, calibration
maps, ``axis_info.parquet``, CSV metadata) that :mod:`calib_core.io`
reads like real data, plus everything that was injected under
``<out>/truth/<planet_id>/``.  Magnitudes follow ``ariel_data.md`` section 4
and the recipe of section 7.

Forward model, per instrument and read pair ``k`` (all charges in electrons):

1. Scene: star rate map in e-/s (AIRS-CH0: column spectrum x spatial row
   profile; FGS1: separable Gaussian-mixture PSF), shifted by the pair's
   pointing jitter ``(dx, dy)`` (exact: every component is integrated over the
   pixels analytically), times the transit light curve of the pixel's
   wavelength bin and a slow multiplicative gain drift.  Transit and drift are
   evaluated at the axis time of the pair's second read.
2. Charge: ``rate = sky * flat_true + dark`` (dead pixels collect nothing);
   ``Q_first = kTC + Poisson(rate * 0.1 s)``,
   ``Q_second = Q_first + Poisson(rate * dt_cds) + cosmic rays`` with
   ``dt_cds`` = 4.5 s (AIRS-CH0) / 0.1 s (FGS1); kTC is a per-pixel,
   per-pair reset offset shared by both reads.
3. Non-linearity: the measured value ``x`` solves
   ``sum_k linear_corr[k] * x**k = Q`` (vectorised Newton).
4. Read noise ``N(0, read_map)`` per read, plus a per-read common-mode offset.
5. ADC: ``DN = floor((x + 1000) * 0.4369)`` clipped to ``[0, 65535]``.

Truth (``<out>/truth/<planet_id>/``): ``truth.json`` (seed, orbit, t0, T14, depths, limb darkening,
``flux_scale`` and ``jitter_scale`` when either is not 1 (absent = 1), scene parameters (star rates
already scaled), per-instrument settings, drift parameters, dropped pairs,
cosmic-ray hits with instrument/pair/frame/row/col/electrons, hot/dead counts) and, per
instrument, ``<inst>_{flat,dark,hot,dead,sky}.npy`` (H, W) maps (true flat, dark rate in
e-/s, masks, zero-jitter out-of-transit star rate in e-/s), ``<inst>_jitter.npy``
(n_pairs, 2) = (dx, dy) in pixels, ``<inst>_{drift,transit}.npy`` (n_pairs, W) for AIRS-CH0
and (n_pairs, 1) for FGS1, ``<inst>_common_mode.npy`` (n_frames,) in e- and
``<inst>_pair_time_s.npy`` (n_pairs,) (times at which transit and drift were evaluated).

Random streams: ``SeedSequence(seed)`` is spawned into independent streams for the planet,
and per instrument for the detector maps, the systematics and the pixel noise, so the
output is byte-identical for a given seed and pyarrow version.

A perfect calibration (ADC -> common mode -> linear_corr -> dark * exptime ->
CDS -> flat) therefore recovers :func:`expected_cds` on good pixels up to
read, shot and quantisation noise.  The shipped ``flat``, ``dark``, ``read``
and ``linear_corr`` maps are the true ones (no measurement noise), except the
shipped flat of dead pixels, which is drawn in ``[-0.05, 0]`` as in the real
data (their true response is 0).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import numbers
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.interpolate import PchipInterpolator
from scipy.special import ndtr

from ..store import atomic_write_text
from .csv_tables import parse_planet_id, read_csv
from .layout import AIRS_CROP, FRAME_SHAPE, FULL_FRAMES, INSTRUMENTS, N_LINEAR_COEFFS, N_TARGETS, DataLayoutError

__all__ = [
    "DEMO_PLANET_ID",
    "DEMO_SEED",
    "DEFAULT_N_PAIRS",
    "GENERATOR_VERSION",
    "airs_wavelengths",
    "target_wavelengths",
    "airs_column_targets",
    "make_demo",
    "ensure_demo",
    "load_truth",
    "expected_cds",
]

DEMO_PLANET_ID = 1100001
DEMO_SEED = 0
DEFAULT_N_PAIRS = 1250  # per instrument: one pair every 21.6 s over the 7.5 h visit (>= 3 samples per bin at 400 phase bins)
GENERATOR_VERSION = 2

OBSERVATION_S = 27000.0  # visit length in seconds (7.5 h)
READ_TIME_OFFSETS_S = (0.1, 0.2)  # axis0 time of the first / second read after the start of a pair slot
FIRST_READ_EXPTIME_S = 0.1  # integration between reset and the first read
ADC_GAIN = 0.4369  # DN per electron
ADC_OFFSET = -1000.0  # electrons = DN / gain + offset
DN_MAX = 65535
KTC_RMS_E = 10.0  # reset offset, e- rms, shared by both reads of a pair
COMMON_MODE_RMS_E = 3.0  # per-read offset common to all pixels, e- rms
CR_RATE_PER_PIXEL_READ = 3e-6  # cosmic-ray hits per pixel per second read
CR_MIN_HITS = 3  # at least this many ordinary hits per instrument
CR_ELECTRONS = (500.0, 20000.0)  # log-uniform deposit range
CR_NEIGHBOUR_PROB = 0.3
N_SATURATING_HITS = 2  # large deposits per instrument that clip at DN_MAX
SATURATING_ELECTRONS = (2.2e5, 3.0e5)
FGS_WAVELENGTH_UM = 0.7
# AIRS-CH0 wavelength grid: cubic through the measured end points and crop edges (ariel_data.md 1.4-1.5)
_AIRS_WAVELENGTH_ANCHORS = ((0, 4.078463), (39, 3.895036), (320, 1.951761), (355, 1.633253))
# median linear_corr coefficients c0..c5 (ariel_data.md 4.3)
_LINEAR_CORR_MEDIAN = (0.143, 1.0, -6.2e-9, 1.18e-11, -6.0e-17, 1.33e-22)
_GM_SUN = 1.32712440018e20  # m^3 s^-2
_R_SUN = 6.957e8  # m

# Scene parameters.  AIRS-CH0: column sums in e- per 4.5 s CDS (ariel_data.md 4.1), interpolated with a
# PCHIP in log10; spatial row profile fitted here to the measured row fractions (rows 13..18: 0.042, 0.112,
# 0.265, 0.295, 0.131, 0.039; 92.6 % in rows 12-19; 96.3 % in 10-21; ~9e-4 per row in the outer rows).
# FGS1: PSF fitted to 85.6 % in the central 6x6, 94.9 % in 12x12, peak pixel 0.098, corners ~1 e- per CDS;
# Moffat-like wings are represented by two broad Gaussians so every component is separable.
_AIRS_SCENE = {
    "column_sum_anchors_e_per_cds": [[0, 87.0], [39, 5.5e3], [100, 2.4e4], [200, 4.9e4], [300, 1.49e5],
                                     [320, 1.04e5], [355, 1.7e3]],
    "anchor_cds_s": 4.5,
    "row_centre": 15.58,
    "row_components": [[0.774, 1.0], [0.226, 3.43]],  # [weight, sigma in rows]
    "row_floor": 9.2e-4,  # per-row fraction added before normalisation
}
_FGS_SCENE = {
    "centre_row_col": [15.4, 15.3],
    "components": [[0.7999, 1.0603], [0.1818, 3.924], [0.0183, 15.21]],  # [weight, sigma in px]
    "total_e_per_cds": 2.21e5,
    "cds_s": 0.1,
}


@dataclass(frozen=True)
class _InstrumentSim:
    """Fixed simulation settings of one instrument."""

    name: str
    cds_s: float  # integration between the two reads of a pair, s
    jitter_rms_px: float  # per-axis pointing jitter per pair, px
    hot_fraction: float
    very_hot_fraction: float  # fraction of the hot pixels made 50-500 e-/s
    dead_fraction: float
    high_read_fraction: float  # pixels with read noise 20-150 e-
    chunk_pairs: int  # pairs simulated and written per parquet row group

    @property
    def shape(self) -> tuple[int, int]:
        return FRAME_SHAPE[self.name]

    @property
    def full_pairs(self) -> int:
        return FULL_FRAMES[self.name] // 2


_SIMS = {
    "AIRS-CH0": _InstrumentSim("AIRS-CH0", 4.5, 0.013, 0.007, 0.05, 0.002, 0.028, 256),
    "FGS1": _InstrumentSim("FGS1", 0.1, 0.1, 0.007, 0.05, 0.003, 0.038, 2048),
}


# ---------------------------------------------------------------------------
# wavelengths and scene
# ---------------------------------------------------------------------------


def airs_wavelengths() -> np.ndarray:
    """Wavelength of each AIRS-CH0 detector column in um, (356,), descending 4.078463 -> 1.633253."""
    cols, wl = np.array(_AIRS_WAVELENGTH_ANCHORS).T
    grid = np.polyval(np.polyfit(cols, wl, 3), np.arange(FRAME_SHAPE["AIRS-CH0"][1]))
    return np.round(grid, 6)


def target_wavelengths() -> np.ndarray:
    """The 283 target wavelengths in um: FGS1 (0.7) then the AIRS crop in ascending order."""
    lo, hi = AIRS_CROP
    return np.concatenate([[FGS_WAVELENGTH_UM], airs_wavelengths()[lo:hi][::-1]])


def airs_column_targets() -> np.ndarray:
    """Index (0-based, into the 283 targets) of the bin each AIRS-CH0 detector column belongs to.

    Column ``c`` in the crop maps to target ``1 + (320 - c)``; columns outside the crop
    use the nearest cropped column.
    """
    lo, hi = AIRS_CROP
    cols = np.clip(np.arange(FRAME_SHAPE["AIRS-CH0"][1]), lo, hi - 1)
    return 1 + (hi - 1 - cols)


def _pixel_integrals(centre: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """Fraction of a unit 1-D Gaussian falling in each of ``n`` pixels (pixel ``i`` spans i-0.5..i+0.5).

    ``centre`` has shape (m,); returns (m, n).
    """
    edges = np.arange(n + 1) - 0.5
    cdf = ndtr((edges[None, :] - centre[:, None]) / sigma)
    return np.diff(cdf, axis=1)


def _airs_row_profile(scene: dict, dy: np.ndarray) -> np.ndarray:
    """Spatial (row) profile of the AIRS-CH0 trace shifted by ``dy`` rows, (m, 32), unnormalised."""
    height = FRAME_SHAPE["AIRS-CH0"][0]
    centre = scene["row_centre"] + dy
    prof = sum(w * _pixel_integrals(centre, s, height) for w, s in scene["row_components"])
    return prof + scene["row_floor"]


def _airs_sky_rate(scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """AIRS-CH0 star rate in e-/s per pixel, (m, 32, 356), for jitter shifts ``dx`` (columns), ``dy`` (rows)."""
    width = FRAME_SHAPE["AIRS-CH0"][1]
    anchors = np.array(scene["column_sum_anchors_e_per_cds"], dtype=np.float64)
    log_sum = PchipInterpolator(anchors[:, 0], np.log10(anchors[:, 1]), extrapolate=True)
    column_rate = 10.0 ** log_sum(np.arange(width)[None, :] - dx[:, None]) / scene["anchor_cds_s"]
    norm = _airs_row_profile(scene, np.zeros(1)).sum()
    rows = _airs_row_profile(scene, dy) / norm
    return rows[:, :, None] * column_rate[:, None, :]


def _fgs_sky_rate(scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """FGS1 star rate in e-/s per pixel, (m, 32, 32), for jitter shifts ``dx`` (columns), ``dy`` (rows)."""
    height, width = FRAME_SHAPE["FGS1"]
    row0, col0 = scene["centre_row_col"]

    def image(ddx: np.ndarray, ddy: np.ndarray) -> np.ndarray:
        return sum(w * _pixel_integrals(row0 + ddy, s, height)[:, :, None]
                   * _pixel_integrals(col0 + ddx, s, width)[:, None, :] for w, s in scene["components"])

    norm = image(np.zeros(1), np.zeros(1)).sum()
    return image(dx, dy) * (scene["total_e_per_cds"] / scene["cds_s"] / norm)


def _sky_rate(instrument: str, scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Star rate map(s) in e-/s, (m, H, W), for per-pair jitter arrays ``dx``, ``dy`` (pixels)."""
    dx, dy = np.atleast_1d(np.asarray(dx, np.float64)), np.atleast_1d(np.asarray(dy, np.float64))
    if instrument == "AIRS-CH0":
        return _airs_sky_rate(scene, dx, dy)
    return _fgs_sky_rate(scene, dx, dy)


# ---------------------------------------------------------------------------
# planet, spectrum, transit
# ---------------------------------------------------------------------------


def _transit_duration_h(period_d: float, a_rs: float, inc_deg: float, k: float) -> float:
    """Total transit duration T14 in hours for a circular orbit (0 if the planet does not transit)."""
    inc = math.radians(inc_deg)
    b = a_rs * math.cos(inc)
    arg = math.sqrt(max((1 + k) ** 2 - b ** 2, 0.0)) / (a_rs * math.sin(inc))
    return period_d * 24.0 / math.pi * math.asin(min(arg, 1.0))


def _draw_system(rng: np.random.Generator) -> dict:
    """Draw star, orbit, base depth and mid-transit time (rejection-sampled to a clean full transit).

    Star info values are rounded as they are written to ``train_star_info.csv``; the
    transit model uses exactly the rounded values.
    """
    for _ in range(10000):
        ms = rng.uniform(0.75, 1.40)
        rs = ms ** 0.9 * rng.uniform(0.9, 1.35)
        period_d = rng.uniform(3.0, 7.5)
        inc = rng.uniform(86.5, 90.0)
        base = rng.uniform(0.006, 0.03)
        a_m = (_GM_SUN * ms * (period_d * 86400.0) ** 2 / (4 * math.pi ** 2)) ** (1 / 3)
        a_rs = a_m / (rs * _R_SUN)
        b = a_rs * math.cos(math.radians(inc))
        t14 = _transit_duration_h(period_d, a_rs, inc, math.sqrt(base))
        if 6.0 <= a_rs <= 16.0 and b <= 0.8 and 1.5 <= t14 <= 5.5:
            break
    else:
        raise RuntimeError("could not draw a transiting system within the configured ranges")
    ts = float(np.clip(5772.0 * ms ** 0.55 * rng.uniform(0.96, 1.04), 4300.0, 6900.0))
    mp = math.exp(rng.uniform(math.log(0.2), math.log(6.0)))
    star = {"Rs": round(rs, 4), "Ms": round(ms, 4), "Ts": round(ts, 1), "Mp": round(mp, 4), "e": 0.0,
            "P": round(period_d, 6), "sma": round(a_rs, 6), "i": round(inc, 6)}
    t14 = _transit_duration_h(star["P"], star["sma"], star["i"], math.sqrt(base))
    t0_h = rng.uniform(max(2.5, t14 / 2 + 1.0), min(5.0, OBSERVATION_S / 3600 - t14 / 2 - 1.0))
    return {"star": star, "base_depth": base, "t0_h": t0_h, "t14_h": t14,
            "impact_parameter": star["sma"] * math.cos(math.radians(star["i"]))}


def _draw_spectrum(rng: np.random.Generator, base: float, wavelengths: np.ndarray) -> dict:
    """Draw (Rp/Rs)^2 per target and quadratic limb darkening varying smoothly with wavelength."""
    bands = ((2.0, 0.08), (2.7, 0.15), (3.3, 0.10))  # um centre, um width: H2O edge, H2O, CH4-like
    weights = rng.uniform(0.2, 1.0, len(bands))
    shape = sum(w * np.exp(-0.5 * ((wavelengths - c) / s) ** 2) for w, (c, s) in zip(weights, bands))
    shape /= shape[1:].max()
    amplitude = rng.uniform(50e-6, 300e-6)
    fgs_offset = rng.uniform(-200e-6, 200e-6)
    depth = base + amplitude * shape
    depth[0] = base + fgs_offset
    x = (1 / wavelengths - 1 / wavelengths.max()) / (1 / wavelengths.min() - 1 / wavelengths.max())
    u1_red, u1_blue = rng.uniform(0.10, 0.20), rng.uniform(0.38, 0.50)
    u2_red, u2_blue = rng.uniform(0.05, 0.12), rng.uniform(0.20, 0.30)
    return {"depth": depth, "u1": u1_red + (u1_blue - u1_red) * x, "u2": u2_red + (u2_blue - u2_red) * x,
            "feature_amplitude": amplitude, "fgs_offset": fgs_offset,
            "feature_bands_um": [list(b) for b in bands], "feature_weights": weights.tolist()}


def _light_curves(system: dict, spectrum: dict, time_s: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Relative flux (batman, quadratic limb darkening) of each target in ``targets`` at ``time_s``.

    Returns (n_times, len(targets)).
    """
    import batman

    star = system["star"]
    params = batman.TransitParams()
    params.t0 = system["t0_h"] / 24.0
    params.per = star["P"]
    params.a = star["sma"]
    params.inc = star["i"]
    params.ecc = 0.0
    params.w = 90.0
    params.limb_dark = "quadratic"
    params.rp = math.sqrt(spectrum["depth"][targets[0]])
    params.u = [spectrum["u1"][targets[0]], spectrum["u2"][targets[0]]]
    model = batman.TransitModel(params, time_s / 86400.0)
    out = np.empty((time_s.size, targets.size))
    for j, target in enumerate(targets):
        params.rp = math.sqrt(spectrum["depth"][target])
        params.u = [spectrum["u1"][target], spectrum["u2"][target]]
        out[:, j] = model.light_curve(params)
    return out


# ---------------------------------------------------------------------------
# detector maps and systematics
# ---------------------------------------------------------------------------


def _draw_detector(rng: np.random.Generator, sim: _InstrumentSim) -> dict:
    """Draw the true detector maps of one instrument (flat, dark, hot, dead, read, linear_corr)."""
    height, width = sim.shape
    n_pix = height * width
    rr, cc = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    illum_coeff = rng.normal(0.0, 0.01, 4)
    illumination = 1 + illum_coeff[0] * rr + illum_coeff[1] * cc + illum_coeff[2] * rr * cc + illum_coeff[3] * cc ** 2
    prnu = np.clip(rng.normal(0.0, 0.015, sim.shape), -0.06, 0.06)
    flat = 1.01 * illumination * (1 + prnu)

    dark = np.clip(rng.normal(0.0063, 0.0015, sim.shape), 0.0, None)
    order = rng.permutation(n_pix)
    n_hot = max(1, round(sim.hot_fraction * n_pix))
    n_dead = max(1, round(sim.dead_fraction * n_pix))
    n_very_hot = max(1, round(sim.very_hot_fraction * n_hot))
    hot = np.zeros(n_pix, bool)
    hot[order[:n_hot]] = True
    dead = np.zeros(n_pix, bool)
    dead[order[n_hot:n_hot + n_dead]] = True
    hot, dead = hot.reshape(sim.shape), dead.reshape(sim.shape)
    hot_rate = np.exp(rng.uniform(math.log(1.0), math.log(12.0), n_hot))
    hot_rate[:n_very_hot] = np.exp(rng.uniform(math.log(50.0), math.log(500.0), n_very_hot))
    dark.flat[order[:n_hot]] = hot_rate

    flat_true = np.where(dead, 0.0, flat)
    flat_shipped = np.where(dead, rng.uniform(-0.05, 0.0, sim.shape), flat)

    read = np.clip(rng.normal(13.0, 0.35, sim.shape), 11.8, 14.5)
    high = rng.random(sim.shape) < sim.high_read_fraction
    read[high] = np.exp(rng.uniform(math.log(20.0), math.log(150.0), int(high.sum())))

    # c_k = median c_k * s**(k-1) for k >= 2 keeps p(x) = c0 + c1 x + p_nl(s x) / s monotonic; c1 = per-pixel gain
    scale = np.clip(rng.normal(1.0, 0.03, sim.shape), 0.9, 1.1)
    linear_corr = np.empty((N_LINEAR_COEFFS, *sim.shape))
    linear_corr[0] = _LINEAR_CORR_MEDIAN[0] + rng.normal(0.0, 0.02, sim.shape)
    linear_corr[1] = 1.0 + np.clip(rng.normal(0.0, 0.005, sim.shape), -0.02, 0.02)
    for k in range(2, N_LINEAR_COEFFS):
        linear_corr[k] = _LINEAR_CORR_MEDIAN[k] * scale ** (k - 1)
    return {"flat_true": flat_true, "flat_shipped": flat_shipped, "dark": dark, "hot": hot, "dead": dead,
            "read": read, "linear_corr": linear_corr, "n_very_hot": n_very_hot}


def _pair_times_s(n_pairs: int) -> tuple[np.ndarray, float]:
    """Axis times (s) of all reads for ``n_pairs`` pairs spread over the visit, and the pair period (s)."""
    period = OBSERVATION_S / n_pairs
    starts = np.arange(n_pairs) * period
    times = np.empty(2 * n_pairs)
    times[0::2] = starts + READ_TIME_OFFSETS_S[0]
    times[1::2] = starts + READ_TIME_OFFSETS_S[1]
    return times, period


def _wavelength_coordinate(wavelength_um: np.ndarray) -> np.ndarray:
    """Map wavelengths to [-1, 1] over 0.7 .. 4.078463 um (for the wavelength dependence of the drift)."""
    lo, hi = FGS_WAVELENGTH_UM, _AIRS_WAVELENGTH_ANCHORS[0][1]
    return 2 * (wavelength_um - lo) / (hi - lo) - 1


def _draw_systematics(rng: np.random.Generator, sim: _InstrumentSim, n_pairs: int, drop_pairs: int,
                      pair_time_s: np.ndarray, column_wavelength_um: np.ndarray, dead: np.ndarray) -> dict:
    """Draw jitter, gain drift, common mode, dropped pairs and cosmic rays of one instrument."""
    height, width = sim.shape
    jitter = rng.normal(0.0, sim.jitter_rms_px, (n_pairs, 2))  # columns: dx (detector columns), dy (rows)

    d1, d2 = rng.uniform(-3.5e-4, 3.5e-4, 2)
    g = rng.uniform(-0.3, 0.3)
    tau = 2 * pair_time_s / OBSERVATION_S - 1
    omega = _wavelength_coordinate(column_wavelength_um)
    drift = 1 + (d1 * tau + d2 * tau ** 2)[:, None] * (1 + g * omega)[None, :]

    common_mode = rng.normal(0.0, COMMON_MODE_RMS_E, 2 * n_pairs)
    dropped = np.sort(rng.choice(n_pairs, size=drop_pairs, replace=False))
    kept = np.setdiff1d(np.arange(n_pairs), dropped)
    alive = np.flatnonzero(~dead.reshape(-1))

    n_hits = max(CR_MIN_HITS, int(rng.poisson(CR_RATE_PER_PIXEL_READ * n_pairs * height * width)))
    n_total = n_hits + N_SATURATING_HITS
    pair = rng.choice(kept, size=n_total)
    pix = rng.choice(alive, size=n_total)
    electrons = np.exp(rng.uniform(math.log(CR_ELECTRONS[0]), math.log(CR_ELECTRONS[1]), n_total))
    electrons[n_hits:] = rng.uniform(*SATURATING_ELECTRONS, N_SATURATING_HITS)
    with_neighbour = rng.random(n_total) < CR_NEIGHBOUR_PROB
    with_neighbour[n_hits:] = False
    direction = rng.integers(0, 4, n_total)
    fraction = rng.uniform(0.1, 0.5, n_total)

    rows, cols = np.divmod(pix, width)
    hits = []
    for i in range(n_total):
        base = {"instrument": sim.name, "pair": int(pair[i]), "frame": int(2 * pair[i] + 1)}
        hits.append({**base, "row": int(rows[i]), "col": int(cols[i]), "electrons": float(electrons[i]),
                     "saturating": bool(i >= n_hits)})
        if with_neighbour[i]:
            dr, dc = ((-1, 0), (1, 0), (0, -1), (0, 1))[direction[i]]
            nr, nc = rows[i] + dr, cols[i] + dc
            nr, nc = (nr if 0 <= nr < height else rows[i] - dr), (nc if 0 <= nc < width else cols[i] - dc)
            if not dead[nr, nc]:
                hits.append({**base, "row": int(nr), "col": int(nc),
                             "electrons": float(electrons[i] * fraction[i]), "saturating": False})
    hits.sort(key=lambda h: (h["frame"], h["row"], h["col"]))
    return {"jitter": jitter, "drift": drift, "drift_params": {"d1": d1, "d2": d2, "g": g},
            "common_mode": common_mode, "dropped": dropped, "cosmic_rays": hits}


# ---------------------------------------------------------------------------
# signal simulation
# ---------------------------------------------------------------------------


def _horner(coeffs: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Evaluate ``sum_k coeffs[k] * x**k`` into ``out`` (Horner scheme, in place)."""
    np.multiply(coeffs[-1], x, out=out)
    for k in range(len(coeffs) - 2, 0, -1):
        out += coeffs[k]
        out *= x
    out += coeffs[0]
    return out


def _invert_nonlinearity(q: np.ndarray, coeffs: np.ndarray, tol: float = 1e-6, max_iter: int = 50) -> np.ndarray:
    """Solve ``sum_k coeffs[k] * x**k = q`` for x (e-) by vectorised Newton iterations.

    Parameters
    ----------
    q : numpy.ndarray
        (n, H, W) collected charge in e-.
    coeffs : numpy.ndarray
        (6, H, W) polynomial coefficients c0..c5 (monotonic over the range of ``q``).
    tol : float
        Convergence threshold on the largest Newton step, e-.
    max_iter : int
        Iteration limit.
    """
    deriv = coeffs[1:] * np.arange(1, N_LINEAR_COEFFS)[:, None, None]
    x = (q - coeffs[0]) / coeffs[1]
    p = np.empty_like(x)
    dp = np.empty_like(x)
    for _ in range(max_iter):
        _horner(coeffs, x, p)
        _horner(deriv, x, dp)
        p -= q
        p /= dp
        x -= p
        if np.abs(p).max() < tol:
            return x
    raise RuntimeError(f"non-linearity inversion did not converge in {max_iter} iterations")


def _to_dn(x: np.ndarray) -> np.ndarray:
    """Measured electrons -> uint16 DN: ``floor((x - offset) * gain)`` clipped to [0, 65535]."""
    return np.clip(np.floor((x - ADC_OFFSET) * ADC_GAIN), 0, DN_MAX).astype(np.uint16)


def _simulate_pairs(rng: np.random.Generator, sim: _InstrumentSim, scene: dict, det: dict, sysm: dict,
                    transit: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Simulate the raw DN of read pairs ``pairs`` (consecutive indices); returns (2n, H, W) uint16."""
    n = pairs.size
    jit = sysm["jitter"][pairs]
    sky = _sky_rate(sim.name, scene, jit[:, 0], jit[:, 1])
    sky *= (transit[pairs] * sysm["drift"][pairs])[:, None, :]
    rate = sky * det["flat_true"] + det["dark"]
    rate[:, det["dead"]] = 0.0

    q = np.empty((2 * n, *sim.shape))
    q[0::2] = rng.poisson(rate * FIRST_READ_EXPTIME_S)
    q[1::2] = q[0::2] + rng.poisson(rate * sim.cds_s)
    ktc = rng.normal(0.0, KTC_RMS_E, rate.shape)
    q[0::2] += ktc
    q[1::2] += ktc
    hits = [h for h in sysm["cosmic_rays"] if pairs[0] <= h["pair"] <= pairs[-1]]
    if hits:
        frame = np.array([h["frame"] for h in hits]) - 2 * pairs[0]
        np.add.at(q, (frame, [h["row"] for h in hits], [h["col"] for h in hits]), [h["electrons"] for h in hits])

    x = _invert_nonlinearity(q, det["linear_corr"])
    x += det["read"] * rng.standard_normal(x.shape)
    x += sysm["common_mode"][2 * pairs[0]:2 * pairs[-1] + 2][:, None, None]
    dn = _to_dn(x)
    dropped = sysm["dropped"][(sysm["dropped"] >= pairs[0]) & (sysm["dropped"] <= pairs[-1])] - pairs[0]
    dn[2 * dropped] = 0
    dn[2 * dropped + 1] = 0
    return dn


def _record_batch(dn: np.ndarray, schema: pa.Schema) -> pa.RecordBatch:
    """Wide record batch (one uint16 column per pixel) from (n, H, W) frames, via one column-major buffer."""
    n = dn.shape[0]
    column_major = pa.array(np.asfortranarray(dn.reshape(n, -1)).ravel(order="F"))
    return pa.RecordBatch.from_arrays([column_major.slice(j * n, n) for j in range(len(schema))], schema=schema)


def _write_signal(path: Path, rng: np.random.Generator, sim: _InstrumentSim, scene: dict, det: dict,
                  sysm: dict, transit: np.ndarray) -> None:
    """Simulate and write one signal parquet chunk by chunk (one row group per chunk of pairs)."""
    n_pairs = transit.shape[0]
    schema = pa.schema([pa.field(str(j), pa.uint16()) for j in range(sim.shape[0] * sim.shape[1])])
    with pq.ParquetWriter(path, schema, compression="snappy", write_statistics=False) as writer:
        for start in range(0, n_pairs, sim.chunk_pairs):
            pairs = np.arange(start, min(start + sim.chunk_pairs, n_pairs))
            dn = _simulate_pairs(rng, sim, scene, det, sysm, transit, pairs)
            writer.write_batch(_record_batch(dn, schema), row_group_size=dn.shape[0])


# ---------------------------------------------------------------------------
# file writers
# ---------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])


def _write_map(path: Path, values: np.ndarray) -> None:
    """Write a 2-D calibration map as ``column_0..`` parquet (ZSTD, no pandas metadata)."""
    table = pa.table({f"column_{j}": values[:, j] for j in range(values.shape[1])})
    pq.write_table(table, path, compression="zstd")


def _write_calibration(directory: Path, det: dict) -> None:
    directory.mkdir(parents=True)
    _write_map(directory / "dark.parquet", det["dark"])
    _write_map(directory / "dead.parquet", det["dead"])
    _write_map(directory / "flat.parquet", det["flat_shipped"])
    _write_map(directory / "read.parquet", det["read"])
    _write_map(directory / "linear_corr.parquet", det["linear_corr"].reshape(-1, det["dark"].shape[1]))


def _axis_columns(n_pairs: dict[str, int]) -> dict[str, np.ndarray]:
    """The four ``axis_info.parquet`` columns (float64, NaN-padded to the longest)."""
    airs_t, _ = _pair_times_s(n_pairs["AIRS-CH0"])
    fgs_t, _ = _pair_times_s(n_pairs["FGS1"])
    integration = np.tile([FIRST_READ_EXPTIME_S, _SIMS["AIRS-CH0"].cds_s], n_pairs["AIRS-CH0"])
    cols = {"AIRS-CH0-axis0-h": airs_t / 3600.0, "AIRS-CH0-axis2-um": airs_wavelengths(),
            "AIRS-CH0-integration_time": integration, "FGS1-axis0-h": fgs_t / 3600.0}
    n_rows = max(v.size for v in cols.values())
    return {k: np.concatenate([v, np.full(n_rows - v.size, np.nan)]) for k, v in cols.items()}


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def _resolve_n_pairs(full: bool, n_pairs: int | dict | None) -> dict[str, int]:
    """Pairs per instrument from the ``full`` / ``n_pairs`` arguments of :func:`make_demo`."""
    if full and n_pairs is not None:
        raise ValueError("give either full=True or n_pairs, not both")
    if full:
        return {inst: _SIMS[inst].full_pairs for inst in INSTRUMENTS}
    if n_pairs is None:
        n_pairs = DEFAULT_N_PAIRS
    if isinstance(n_pairs, numbers.Integral) and not isinstance(n_pairs, bool):
        counts = {inst: int(n_pairs) for inst in INSTRUMENTS}
    elif isinstance(n_pairs, dict) and set(n_pairs) == set(INSTRUMENTS):
        counts = {inst: int(n_pairs[inst]) for inst in INSTRUMENTS}
    else:
        raise ValueError(f"n_pairs must be an int or a dict with keys {INSTRUMENTS}, got {n_pairs!r}")
    for inst, n in counts.items():
        if not 2 <= n <= _SIMS[inst].full_pairs:
            raise ValueError(f"n_pairs for {inst} must be in [2, {_SIMS[inst].full_pairs}], got {n}")
    return counts


_SHARED_FILES = ("axis_info.parquet", "adc_info.csv", "wavelengths.csv")  #: one per dataset, shared by its planets


def _row_files(split: str) -> list[str]:
    """Dataset-level CSVs holding one row per planet of ``split``."""
    return (["train.csv"] if split == "train" else []) + [f"{split}_star_info.csv"]


def _is_dataset(out: Path) -> bool:
    names = {*_SHARED_FILES, "train", "test", "train.csv", "train_star_info.csv", "test_star_info.csv"}
    return any((out / name).exists() for name in names)


def _other_planets(out: Path, split: str, planet_id: int) -> list[str]:
    """``split/id`` of every planet directory in ``out`` except the one being written."""
    found = []
    for s in ("train", "test"):
        if (out / s).is_dir():
            found += [f"{s}/{p.name}" for p in (out / s).iterdir()
                      if p.name.isdigit() and not (s == split and int(p.name) == planet_id)]
    return sorted(found)


def _check_out_dir(out: Path, overwrite: bool, planet_id: int, split: str) -> None:
    """Refuse to replace an existing planet without ``overwrite`` or to write into a non-dataset directory."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"demo output {out} exists and is not a directory")
    if not out.is_dir() or overwrite:
        return
    mine = [p for p in (out / split / str(planet_id), out / "truth" / str(planet_id)) if os.path.lexists(p)]
    if mine:
        raise FileExistsError(f"demo output directory {out} is not empty: planet {planet_id} exists ({mine[0]}); "
                              f"pass overwrite=True (make-demo --overwrite) to replace it")
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".tmp-"))
    if entries and not _is_dataset(out):
        raise FileExistsError(f"demo output directory {out} is not empty (found {entries[:5]}) and not a dataset "
                              f"root; pass overwrite=True (make-demo --overwrite) to write the demo files into it")


def _scaled_scene(instrument: str, flux_scale: float) -> dict:
    """The instrument's scene with the star's electron rates multiplied by ``flux_scale``.

    ``flux_scale == 1`` returns the module's scene itself (the default output stays byte-identical).
    """
    scene = _AIRS_SCENE if instrument == "AIRS-CH0" else _FGS_SCENE
    if flux_scale == 1.0:
        return scene
    if instrument == "AIRS-CH0":
        anchors = [[col, value * flux_scale] for col, value in scene["column_sum_anchors_e_per_cds"]]
        return {**scene, "column_sum_anchors_e_per_cds": anchors}
    return {**scene, "total_e_per_cds": scene["total_e_per_cds"] * flux_scale}


def _generate(tmp: Path, seed: int, planet_id: int, n_pairs: dict[str, int], drop_pairs: int, split: str,
              flux_scale: float = 1.0, jitter_scale: float = 1.0) -> None:
    """Generate all files of the demo planet under ``tmp`` (same relative layout as the final dataset)."""
    streams = np.random.SeedSequence(seed).spawn(1 + 3 * len(INSTRUMENTS))
    rngs = [np.random.default_rng(s) for s in streams]
    wavelengths = target_wavelengths()
    system = _draw_system(rngs[0])
    spectrum = _draw_spectrum(rngs[0], system["base_depth"], wavelengths)
    scenes = {inst: _scaled_scene(inst, flux_scale) for inst in INSTRUMENTS}
    column_targets = {"AIRS-CH0": airs_column_targets(), "FGS1": np.zeros(1, dtype=int)}
    column_wavelength = {"AIRS-CH0": airs_wavelengths(), "FGS1": np.array([FGS_WAVELENGTH_UM])}

    planet_dir = tmp / split / str(planet_id)
    truth_dir = tmp / "truth" / str(planet_id)
    planet_dir.mkdir(parents=True)
    truth_dir.mkdir(parents=True)
    per_instrument = {}
    cosmic_rays = []
    for i, inst in enumerate(INSTRUMENTS):
        sim = _SIMS[inst]
        if jitter_scale != 1.0:
            sim = replace(sim, jitter_rms_px=sim.jitter_rms_px * jitter_scale)
        rng_det, rng_sys, rng_sig = rngs[1 + 3 * i:4 + 3 * i]
        det = _draw_detector(rng_det, sim)
        times, period = _pair_times_s(n_pairs[inst])
        pair_time = times[1::2]
        sysm = _draw_systematics(rng_sys, sim, n_pairs[inst], drop_pairs, pair_time, column_wavelength[inst],
                                 det["dead"])
        unique, inverse = np.unique(column_targets[inst], return_inverse=True)
        transit = _light_curves(system, spectrum, pair_time, unique)[:, inverse]
        _write_calibration(planet_dir / f"{inst}_calibration_0", det)
        _write_signal(planet_dir / f"{inst}_signal_0.parquet", rng_sig, sim, scenes[inst], det, sysm, transit)
        arrays = {"flat": det["flat_true"], "dark": det["dark"], "hot": det["hot"], "dead": det["dead"],
                  "sky": _sky_rate(inst, scenes[inst], np.zeros(1), np.zeros(1))[0],
                  "jitter": sysm["jitter"], "drift": sysm["drift"], "transit": transit,
                  "common_mode": sysm["common_mode"], "pair_time_s": pair_time}
        for name, arr in arrays.items():
            np.save(truth_dir / f"{inst}_{name}.npy", arr)
        per_instrument[inst] = {
            "n_pairs": n_pairs[inst], "pair_period_s": period, "cds_s": sim.cds_s,
            "first_read_exptime_s": FIRST_READ_EXPTIME_S, "jitter_rms_px": sim.jitter_rms_px,
            "drift": {**sysm["drift_params"], "definition": "1 + (d1*tau + d2*tau**2) * (1 + g*omega), "
                      "tau = 2*t/27000 s - 1, omega = 2*(lambda - 0.7)/(4.078463 - 0.7) - 1"},
            "dropped_pairs": sysm["dropped"].tolist(), "n_hot": int(det["hot"].sum()),
            "n_very_hot": det["n_very_hot"], "n_dead": int(det["dead"].sum()),
            "scene": scenes[inst],
        }
        cosmic_rays += sysm["cosmic_rays"]

    # the scales are recorded when either differs from 1, so a default planet's truth.json is unchanged
    scales = {"flux_scale": flux_scale, "jitter_scale": jitter_scale}
    _write_truth_json(truth_dir, seed, planet_id, split, system, spectrum, per_instrument, cosmic_rays,
                      scales if any(v != 1.0 for v in scales.values()) else {})
    _write_metadata(tmp, planet_id, split, system, spectrum)


def _write_truth_json(truth_dir: Path, seed: int, planet_id: int, split: str, system: dict, spectrum: dict,
                      per_instrument: dict, cosmic_rays: list[dict], scales: dict) -> None:
    """Write ``truth.json``: every injected scalar parameter, per-instrument settings and cosmic-ray hits."""
    truth = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "planet_id": planet_id, "split": split,
        **scales,
        "t0_h": system["t0_h"], "t14_h": system["t14_h"], "period_d": system["star"]["P"],
        "a_rs": system["star"]["sma"], "inc_deg": system["star"]["i"], "ecc": 0.0,
        "impact_parameter": system["impact_parameter"], "star": system["star"],
        "base_depth": system["base_depth"], "feature_amplitude": spectrum["feature_amplitude"],
        "feature_bands_um": spectrum["feature_bands_um"], "feature_weights": spectrum["feature_weights"],
        "fgs_offset": spectrum["fgs_offset"],
        "depth": spectrum["depth"].tolist(), "u1": spectrum["u1"].tolist(), "u2": spectrum["u2"].tolist(),
        "wavelength_um": target_wavelengths().tolist(),
        "adc": {"gain": ADC_GAIN, "offset": ADC_OFFSET, "dn_max": DN_MAX},
        "ktc_rms_e": KTC_RMS_E, "common_mode_rms_e": COMMON_MODE_RMS_E,
        "cosmic_ray_rate_per_pixel_read": CR_RATE_PER_PIXEL_READ,
        "transit_time_convention": "batman at the axis0 time of the second (odd) read of each pair",
        "flat_convention": "flat.parquet = true flat on live pixels (no measurement noise); "
                           "dead pixels: true response 0, shipped flat uniform in [-0.05, 0]",
        "instruments": per_instrument,
        "cosmic_rays": cosmic_rays,
    }
    (truth_dir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def _write_metadata(tmp: Path, planet_id: int, split: str, system: dict, spectrum: dict) -> None:
    """The planet's rows: ``train.csv`` (train split) and ``<split>_star_info.csv``, one row each."""
    wl_names = [f"wl_{j}" for j in range(1, N_TARGETS + 1)]
    if split == "train":
        _write_csv(tmp / "train.csv", ["planet_id", *wl_names], [[planet_id, *map(float, spectrum["depth"])]])
    star = system["star"]
    _write_csv(tmp / f"{split}_star_info.csv", ["planet_id", *star], [[planet_id, *map(float, star.values())]])


def _write_shared(tmp: Path, n_pairs: dict[str, int]) -> None:
    """The dataset-level files every planet shares: wavelengths.csv, adc_info.csv, axis_info.parquet."""
    wl_names = [f"wl_{j}" for j in range(1, N_TARGETS + 1)]
    _write_csv(tmp / "wavelengths.csv", wl_names, [list(map(float, target_wavelengths()))])
    _write_csv(tmp / "adc_info.csv",
               ["FGS1_adc_offset", "FGS1_adc_gain", "AIRS-CH0_adc_offset", "AIRS-CH0_adc_gain"],
               [[ADC_OFFSET, ADC_GAIN, ADC_OFFSET, ADC_GAIN]])
    pq.write_table(pa.table(_axis_columns(n_pairs)), tmp / "axis_info.parquet", compression="snappy")


@contextlib.contextmanager
def _dataset_lock(out: Path):
    """Exclusive lock on the dataset root directory while its dataset-level files are merged and written."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                     # releases the lock


def _same_table(new: Path, old: Path) -> bool:
    """Two ``axis_info.parquet`` files hold the same columns and values (NaN padding included)."""
    a, b = pq.read_table(new), pq.read_table(old)
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    return all(np.array_equal(a.column(c).to_numpy(zero_copy_only=False).astype(np.float64),
                              b.column(c).to_numpy(zero_copy_only=False).astype(np.float64), equal_nan=True)
               for c in a.column_names)


def _same_csv(new: Path, old: Path) -> bool:
    """Two single-table CSVs have the same header and numerically equal rows."""
    (h1, r1), (h2, r2) = read_csv(new), read_csv(old)
    if h1 != h2 or len(r1) != len(r2):
        return False
    try:
        return all(np.array_equal(np.array(x, np.float64), np.array(y, np.float64)) for x, y in zip(r1, r2))
    except ValueError:
        return False


def _axis_frames(path: Path) -> str:
    """'n AIRS-CH0 / m FGS1 frames' of an axis_info file, for messages."""
    table = pq.read_table(path)
    counts = []
    for inst in ("AIRS-CH0", "FGS1"):
        col = f"{inst}-axis0-h"
        if col in table.column_names:
            values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            counts.append(f"{int(np.isfinite(values).sum())} {inst}")
    return " / ".join(counts) + " frames"


def _shared_file_plan(tmp: Path, out: Path, others: list[str]) -> list[str]:
    """Names of the shared files to write; refuse when one would change what other planets read."""
    plan = []
    for name in _SHARED_FILES:
        new, old = tmp / name, out / name
        if not os.path.lexists(old) or not others:
            plan.append(name)            # absent, or used by no other planet: (re)written
            continue
        try:
            same = _same_table(new, old) if name.endswith(".parquet") else _same_csv(new, old)
        except (DataLayoutError, pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{old}: unreadable ({str(exc).splitlines()[0][:200]}) and shared with planets "
                                  f"{', '.join(others[:5])}; expected a readable file (nothing was written)") from None
        if not same:
            detail = (f"holds {_axis_frames(old)}, the new planet needs {_axis_frames(new)}"
                      if name.endswith(".parquet") else "differs from the values the new planet needs")
            raise DataLayoutError(f"{old}: {detail}; expected the same {name} for every planet of the dataset "
                                  f"(shared with {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}): "
                                  f"use the same number of pairs, or another root (nothing was written)")
    return plan


def _merged_rows(tmp: Path, out: Path, name: str, planet_id: int, overwrite: bool) -> str:
    """Text of dataset CSV ``name``: the existing rows of other planets plus the new planet's row."""
    header, new_rows = read_csv(tmp / name)
    old_path = out / name
    if not os.path.lexists(old_path):
        rows = new_rows
    else:
        old_header, old_rows = read_csv(old_path)          # a corrupt file is refused, never rewritten
        if old_header != header:
            raise DataLayoutError(f"{old_path}: columns {old_header[:4]}... differ from the demo's "
                                  f"{header[:4]}...; expected the Kaggle columns (nothing was written)")
        idx = header.index("planet_id")
        keep = []
        for row in old_rows:
            if parse_planet_id(old_path, row, idx) == planet_id:
                if not overwrite:
                    raise DataLayoutError(f"{old_path}: line {row.line} already holds planet_id {planet_id}; "
                                          f"expected no row for a new planet (pass overwrite=True, "
                                          f"make-demo --overwrite, to replace it)")
                continue
            keep.append(row)
        rows = keep + new_rows
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` to ``dest``; an existing ``dest`` is moved aside first and deleted after."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if os.path.lexists(dest):
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def _move_into_place(tmp: Path, out: Path, planet_id: int, split: str, overwrite: bool) -> None:
    """Merge the generated planet into the dataset ``out`` without damaging its other planets.

    Under an exclusive lock on ``out``: shared files (axis_info, adc_info, wavelengths) must
    equal the existing ones when other planets use them (else DataLayoutError, nothing written);
    the planet's rows are added to ``train.csv`` / ``<split>_star_info.csv`` (replacing its old
    row with ``overwrite``); every file is replaced atomically, the planet directory last.
    """
    with _dataset_lock(out):
        others = _other_planets(out, split, planet_id)
        shared = _shared_file_plan(tmp, out, others)
        merged = {name: _merged_rows(tmp, out, name, planet_id, overwrite) for name in _row_files(split)}
        _replace_dir(tmp / "truth" / str(planet_id), out / "truth" / str(planet_id))
        for name in shared:
            os.replace(tmp / name, out / name)
        for name, text in merged.items():
            atomic_write_text(out / name, text)
        _replace_dir(tmp / split / str(planet_id), out / split / str(planet_id))


def make_demo(out: str | os.PathLike, seed: int = DEMO_SEED, full: bool = False, planet_id: int | None = None, *,
              n_pairs: int | dict[str, int] | None = None, drop_pairs: int = 0, overwrite: bool = False,
              split: str = "train", flux_scale: float = 1.0, jitter_scale: float = 1.0) -> Path:
    """Write one synthetic planet in the 2025 Kaggle layout, with its ground truth.

    Parameters
    ----------
    out : str or os.PathLike
        Dataset root: absent, empty, or an existing dataset (Kaggle layout) to add the planet to.
    seed : int
        Seed of all random streams; the output bytes are identical for a given seed.
    full : bool
        Full size: 5625 AIRS-CH0 pairs (11250 frames, 4.8 s period) and 67500 FGS1 pairs
        (135000 frames, 0.4 s period).
    planet_id : int, optional
        Planet id (directory name); default :data:`DEMO_PLANET_ID`.
    n_pairs : int or dict, optional
        Read pairs per instrument (an int for both, or ``{"AIRS-CH0": n, "FGS1": m}``);
        default :data:`DEFAULT_N_PAIRS` (pair period 21.6 s over the 7.5 h visit).
    drop_pairs : int
        Pairs per instrument lost in telemetry: both reads are written as all-zero DN rows.
    overwrite : bool
        Replace an existing planet of the same id (its directory, truth and rows), or write into
        a non-empty directory that is not a dataset.  Other planets are never touched.
    split : str
        ``"train"`` (writes ``train.csv`` labels) or ``"test"`` (no labels file).
    flux_scale : float
        Stellar brightness: the star's electron rates of both instruments times this factor
        (> 0; 0.1 = a star 2.5 magnitudes fainter).  The default 1 leaves every output byte
        for byte as without it; any other value is recorded in ``truth.json`` (``flux_scale``,
        and the scaled ``scene`` of each instrument).
    jitter_scale : float
        Pointing jitter rms of both instruments times this factor (>= 0; 0 = no jitter);
        recorded like ``flux_scale`` (``jitter_scale``, each instrument's ``jitter_rms_px``).

    Returns
    -------
    pathlib.Path
        The dataset root ``out``.

    Raises
    ------
    FileExistsError
        The planet exists and ``overwrite`` is false, or ``out`` is a non-empty non-dataset directory.
    DataLayoutError
        ``out`` holds other planets whose shared files (``axis_info.parquet``, ``adc_info.csv``,
        ``wavelengths.csv``) differ from this planet's (e.g. another ``n_pairs``), or one of its
        dataset CSVs is unreadable: nothing is written.

    Notes
    -----
    Everything is generated under ``out/.tmp-*`` and merged into the dataset at the end under
    an exclusive lock on ``out``: the planet's rows are added to ``train.csv`` and
    ``<split>_star_info.csv`` (the other planets' rows are kept), shared files are written only
    when absent, equal, or used by no other planet, every file is replaced atomically and the
    planet directory comes last, so an interrupted run never leaves a planet that looks complete
    and never damages the planets already there.
    """
    out = Path(out)
    planet_id = DEMO_PLANET_ID if planet_id is None else int(planet_id)
    counts = _resolve_n_pairs(full, n_pairs)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 <= drop_pairs < min(counts.values()):
        raise ValueError(f"drop_pairs must be in [0, {min(counts.values())}), got {drop_pairs}")
    if not (math.isfinite(flux_scale) and flux_scale > 0):
        raise ValueError(f"flux_scale must be a finite number > 0, got {flux_scale}")
    if not (math.isfinite(jitter_scale) and jitter_scale >= 0):
        raise ValueError(f"jitter_scale must be a finite number >= 0, got {jitter_scale}")
    _check_out_dir(out, overwrite, planet_id, split)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out))
    try:
        _write_shared(tmp, counts)
        with _dataset_lock(out):         # refuse a disagreeing dataset before minutes of simulation
            _shared_file_plan(tmp, out, _other_planets(out, split, planet_id))
        _generate(tmp, seed, planet_id, counts, drop_pairs, split, float(flux_scale), float(jitter_scale))
        _move_into_place(tmp, out, planet_id, split, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_demo(seed: int = DEMO_SEED, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the root of the default demo dataset for ``seed``, generating it once if needed.

    Parameters
    ----------
    seed : int
        Demo seed.
    cache_dir : str or os.PathLike, optional
        Where demo datasets are kept; default ``$SPECTRAMIND_CACHE_DIR`` or ``~/.cache/spectramind``.
        The dataset lives in ``<cache_dir>/demo-v<GENERATOR_VERSION>-seed<seed>``.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("SPECTRAMIND_CACHE_DIR") or Path.home() / ".cache" / "spectramind"
    root = Path(cache_dir) / f"demo-v{GENERATOR_VERSION}-seed{seed}"
    if not (root / "train" / str(DEMO_PLANET_ID)).is_dir():
        make_demo(root, seed=seed, overwrite=True)
    return root


def load_truth(root: str | os.PathLike, planet_id: int) -> dict:
    """Load the ground truth of a demo planet.

    Returns
    -------
    dict
        The contents of ``truth.json`` plus every ``<instrument>_<name>.npy`` array under the
        key ``"<instrument>_<name>"`` (e.g. ``"AIRS-CH0_flat"``, ``"FGS1_jitter"``).
    """
    truth_dir = Path(root) / "truth" / str(planet_id)
    path = truth_dir / "truth.json"
    if not path.is_file():
        raise DataLayoutError(f"demo truth not found: expected file {path}")
    truth = json.loads(path.read_text())
    for npy in sorted(truth_dir.glob("*.npy")):
        truth[npy.stem] = np.load(npy)
    return truth


def expected_cds(root: str | os.PathLike, planet_id: int, instrument: str,
                 pair_indices: np.ndarray | list[int] | None = None) -> np.ndarray:
    """Noiseless CDS sky signal in electrons that a perfect calibration should recover.

    ``sky_rate(jitter_k) * dt_cds * transit_k * drift_k`` per pixel, with ``dt_cds`` 4.5 s
    (AIRS-CH0) / 0.1 s (FGS1): no flat, dark, non-linearity, common mode or noise.  Dead
    pixels carry the sky value they would see (the detector records nothing there).

    Parameters
    ----------
    root : str or os.PathLike
        Demo dataset root.
    planet_id : int
        Demo planet id.
    instrument : str
        ``"FGS1"`` or ``"AIRS-CH0"``.
    pair_indices : array-like of int, optional
        Pairs to compute (default all); pair ``k`` is frames ``2k`` and ``2k + 1``.

    Returns
    -------
    numpy.ndarray
        (n, H, W) float64 electrons.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    truth = load_truth(root, planet_id)
    meta = truth["instruments"][instrument]
    n_pairs = meta["n_pairs"]
    pairs = np.arange(n_pairs) if pair_indices is None else np.asarray(pair_indices, dtype=int)
    jitter = truth[f"{instrument}_jitter"][pairs]
    sky = _sky_rate(instrument, meta["scene"], jitter[:, 0], jitter[:, 1])
    factor = truth[f"{instrument}_transit"][pairs] * truth[f"{instrument}_drift"][pairs]
    sky *= factor[:, None, :]
    return sky * meta["cds_s"]
