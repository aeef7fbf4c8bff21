"""The detector and its systematics: true maps (flat, dark, hot, dead, read noise, non-linearity), jitter,
gain drift, common mode, dropped pairs and cosmic rays of one instrument."""

from __future__ import annotations

import math

import numpy as np

from ..io.layout import N_LINEAR_COEFFS
from .settings import (COMMON_MODE_RMS_E, CR_ELECTRONS, CR_MIN_HITS, CR_NEIGHBOUR_PROB, CR_RATE_PER_PIXEL_READ,
                       N_SATURATING_HITS, OBSERVATION_S, SATURATING_ELECTRONS, InstrumentSim, wavelength_coordinate)

__all__ = ["draw_detector", "draw_systematics"]

# median linear_corr coefficients c0..c5 (ariel_data.md 4.3)
_LINEAR_CORR_MEDIAN = (0.143, 1.0, -6.2e-9, 1.18e-11, -6.0e-17, 1.33e-22)


def draw_detector(rng: np.random.Generator, sim: InstrumentSim) -> dict:
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


def draw_systematics(rng: np.random.Generator, sim: InstrumentSim, n_pairs: int, drop_pairs: int,
                      pair_time_s: np.ndarray, column_wavelength_um: np.ndarray, dead: np.ndarray) -> dict:
    """Draw jitter, gain drift, common mode, dropped pairs and cosmic rays of one instrument."""
    height, width = sim.shape
    jitter = rng.normal(0.0, sim.jitter_rms_px, (n_pairs, 2))  # columns: dx (detector columns), dy (rows)

    d1, d2 = rng.uniform(-3.5e-4, 3.5e-4, 2)
    g = rng.uniform(-0.3, 0.3)
    tau = 2 * pair_time_s / OBSERVATION_S - 1
    omega = wavelength_coordinate(column_wavelength_um)
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
