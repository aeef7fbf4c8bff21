"""The injected planet: star and orbit, the transmission spectrum, and its transit light curves.

The simulator computes its transits independently of the engine's batman
wrapper (:mod:`calib_core.transit.model`) and of its duration formula
(:func:`calib_core.transit.transit_durations`) on purpose: the simulated
planet is the truth the stages are tested against, so a mistake in the
engine's wrapper (a time origin, units, the limb-darkening convention) must
show up as a disagreement, not be shared by the data.
"""

from __future__ import annotations

import math

import numpy as np

from .settings import OBSERVATION_S

__all__ = ["draw_system", "draw_spectrum", "light_curves"]

_GM_SUN = 1.32712440018e20  # m^3 s^-2
_R_SUN = 6.957e8  # m


def _transit_duration_h(period_d: float, a_rs: float, inc_deg: float, k: float) -> float:
    """Total transit duration T14 in hours for a circular orbit (0 if the planet does not transit)."""
    inc = math.radians(inc_deg)
    b = a_rs * math.cos(inc)
    arg = math.sqrt(max((1 + k) ** 2 - b ** 2, 0.0)) / (a_rs * math.sin(inc))
    return period_d * 24.0 / math.pi * math.asin(min(arg, 1.0))


def draw_system(rng: np.random.Generator) -> dict:
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


def draw_spectrum(rng: np.random.Generator, base: float, wavelengths: np.ndarray) -> dict:
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


def light_curves(system: dict, spectrum: dict, time_s: np.ndarray, targets: np.ndarray) -> np.ndarray:
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
