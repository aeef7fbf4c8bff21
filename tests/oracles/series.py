"""Forward model of a photometry series with a known truth: the input of the series-stage tests.

Nothing in the engine calls it; the tests of trace, phase and depths run it to
have planets whose depths, limb darkening and systematics are known exactly.
"""

from __future__ import annotations

import numpy as np

from calib_core.transit import Geometry, light_curve


def simulate_series(rng: np.random.Generator, time_s: np.ndarray, wavelength_um: np.ndarray,
                    geometry: Geometry, depth: np.ndarray, u1: np.ndarray, u2: np.ndarray,
                    electrons: np.ndarray, *, drift: np.ndarray | None = None, jitter_px: float = 0.0,
                    jitter_gain: np.ndarray | None = None, read_noise_e: float = 0.0) -> dict[str, np.ndarray]:
    """Forward model of a photometry series (the photometry stage's output fields) with a known truth.

    ``flux = electrons * transit * drift * (1 + jitter_gain . (dx, dy)) + noise``: batman
    transits with quadratic limb darkening per channel, a multiplicative drift,
    a pointing-jitter systematic linear in the true per-frame offsets, shot plus
    read noise.  The reported centroids are the true offsets plus 10 %
    measurement noise; the reported variance is the shot + read variance.
    Used by the tests of the series stages.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random stream.
    time_s : numpy.ndarray
        (B,) seconds since the visit start.
    wavelength_um : numpy.ndarray
        (C,) channel wavelengths.
    geometry : Geometry
        Orbit.
    depth, u1, u2 : numpy.ndarray
        (C,) true ``(Rp/Rs)**2`` and limb darkening.
    electrons : numpy.ndarray
        (C,) out-of-transit electrons per frame and channel (the stellar spectrum).
    drift : numpy.ndarray, optional
        (B, C) multiplicative drift (default 1).
    jitter_px : float
        Rms pointing jitter per axis and frame, pixels.
    jitter_gain : numpy.ndarray, optional
        (C, 2) relative flux change per pixel of x / y offset.
    read_noise_e : float
        Read noise per frame and channel, electrons.

    Returns
    -------
    dict
        ``photometry_flux``, ``photometry_flux_var``, ``photometry_sky``,
        ``photometry_centroid_x|y``, ``photometry_flags``, ``time_s``,
        ``channel_wavelength_um`` and the noiseless ``transit`` (B, C).
    """
    n_frames, n_chan = time_s.size, wavelength_um.size
    transit = light_curve(time_s / 3600.0, geometry, depth, u1, u2)
    offsets = rng.normal(0.0, jitter_px, (n_frames, 2))
    jitter = 1.0 if jitter_gain is None else 1.0 + offsets @ np.asarray(jitter_gain).T
    drift = np.ones((n_frames, n_chan)) if drift is None else drift
    expected = electrons[None, :] * transit * drift * jitter
    variance = expected + read_noise_e ** 2
    flux = expected + rng.normal(0.0, 1.0, expected.shape) * np.sqrt(variance)
    measured = offsets + rng.normal(0.0, 0.1 * max(jitter_px, 1e-12), offsets.shape)
    return {
        "photometry_flux": flux,
        "photometry_flux_var": np.clip(flux, 0.0, None) + read_noise_e ** 2,
        "photometry_sky": np.zeros_like(flux),
        "photometry_centroid_x": 15.5 + measured[:, 0],
        "photometry_centroid_y": 15.5 + measured[:, 1],
        "photometry_flags": np.zeros(flux.shape, np.uint16),
        "time_s": np.asarray(time_s, np.float64),
        "channel_wavelength_um": np.asarray(wavelength_um, np.float64),
        "transit": transit,
    }
