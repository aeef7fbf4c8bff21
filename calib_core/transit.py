"""Transit geometry, transit detection, binning and a batman wrapper (shared by trace, phase, depths).

Conventions
-----------
* Times are **hours since the visit start** (``time_s / 3600``) unless a name
  says otherwise; periods are in days (as in ``train_star_info.csv``).
* Orbits are circular (the challenge's ``e`` is always 0).
* Depth means ``(Rp/Rs)**2`` (the challenge label), not the maximum flux drop.

Exact linear form of the quadratic limb-darkening light curve
-------------------------------------------------------------
For a fixed planet size ``k = Rp/Rs`` and geometry, the flux deficit of a star
with intensity ``I(mu) = 1 - u1 (1 - mu) - u2 (1 - mu)**2`` is *linear* in the
three coefficients ``beta = k**2 (1 - u1 - u2, u1, u2) / Omega`` with
``Omega = 1 - u1/3 - u2/6``::

    deficit(t) = beta_a E_a(t) + beta_b E_b(t) + beta_c E_c(t)
    E_a = D(t; u=(0,0)) / k**2,  E_b = 2/3 D(t; u=(1,0)) / k**2,  E_c = 5/6 D(t; u=(0,1)) / k**2

where ``D(t; u)`` is batman's deficit ``1 - flux`` (the three intensity laws
``1``, ``mu`` and ``1 - (1 - mu)**2`` span every quadratic law; 1, 2/3 and 5/6
are their disc-integrated fluxes over pi).  The depth and the limb darkening
follow linearly / as ratios::

    k**2 = beta_a + 2/3 beta_b + 5/6 beta_c,   u1 = beta_b / sum(beta),   u2 = beta_c / sum(beta)

:func:`deficit_basis` returns ``(E_a, E_b, E_c)``; the depths stage fits
``beta`` (or one amplitude along a known limb-darkening direction) by linear
least squares, and refines ``k`` in the basis.  The identity is exact to
rounding (tested against batman).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "LD_FLUX_WEIGHTS",
    "Geometry",
    "TransitEstimate",
    "transit_durations",
    "geometry_from_durations",
    "time_bin",
    "box_search",
    "estimate_transit",
    "window_mask",
    "supersample_factor",
    "deficit_basis",
    "ld_direction",
    "ld_from_beta",
    "light_curve",
    "red_noise_beta",
    "simulate_series",
]

_BOX_BINS = 120  # time bins of the exhaustive box search (the trapezoid fit then uses the finer bins)

#: disc-integrated flux / pi of the intensity laws 1, mu, 1-(1-mu)^2: depth = LD_FLUX_WEIGHTS @ beta
LD_FLUX_WEIGHTS = np.array([1.0, 2.0 / 3.0, 5.0 / 6.0])


@dataclass(frozen=True)
class Geometry:
    """Circular-orbit transit geometry.

    Attributes
    ----------
    t0_h : float
        Mid-transit time, hours since the visit start.
    period_d : float
        Orbital period, days.
    a_rs : float
        Semi-major axis in stellar radii.
    inc_deg : float
        Orbital inclination, degrees.
    """

    t0_h: float
    period_d: float
    a_rs: float
    inc_deg: float

    @property
    def impact_parameter(self) -> float:
        """Sky-projected impact parameter ``b = a cos i`` (stellar radii)."""
        return self.a_rs * math.cos(math.radians(self.inc_deg))

    def contact_times(self, k: float) -> np.ndarray:
        """Contact times t1..t4 in hours since the visit start for radius ratio ``k``.

        A grazing transit (no second/third contact) has ``t2 = t3 = t0``.
        """
        t14, t23 = transit_durations(self.period_d, self.a_rs, self.inc_deg, k)
        return np.array([self.t0_h - t14 / 2, self.t0_h - t23 / 2, self.t0_h + t23 / 2, self.t0_h + t14 / 2])


def transit_durations(period_d: float, a_rs: float, inc_deg: float, k: float) -> tuple[float, float]:
    """Total (T14) and full (T23) transit durations in hours, circular orbit (Winn 2010, eqs. 14-15).

    Parameters
    ----------
    period_d : float
        Period, days.
    a_rs : float
        Semi-major axis / stellar radius.
    inc_deg : float
        Inclination, degrees.
    k : float
        Radius ratio Rp/Rs.

    Returns
    -------
    (float, float)
        T14 and T23 in hours; 0 when the planet does not transit (T14) or the
        transit is grazing (T23).
    """
    inc = math.radians(inc_deg)
    b = a_rs * math.cos(inc)
    scale = period_d * 24.0 / math.pi

    def duration(r: float) -> float:
        arg = math.sqrt(max(r * r - b * b, 0.0)) / (a_rs * math.sin(inc))
        return scale * math.asin(min(arg, 1.0))

    return duration(1.0 + k), duration(1.0 - k)


def geometry_from_durations(t14_h: float, t23_h: float, depth: float, period_d: float) -> tuple[float, float]:
    """Invert the durations into ``(a_rs, inc_deg)`` (Seager & Mallen-Ornelas 2003, circular orbit).

    Parameters
    ----------
    t14_h, t23_h : float
        Total and full durations, hours (``t23_h`` is clipped into ``[0, 0.95 t14_h]``).
    depth : float
        ``(Rp/Rs)**2``.
    period_d : float
        Period, days.

    Returns
    -------
    (float, float)
        Semi-major axis in stellar radii and inclination in degrees (impact
        parameter clipped into ``[0, 1]``).
    """
    k = math.sqrt(max(depth, 1e-8))
    phase14 = math.pi * t14_h / (24.0 * period_d)
    phase23 = math.pi * min(max(t23_h, 0.0), 0.95 * t14_h) / (24.0 * period_d)
    s14, s23 = math.sin(phase14) ** 2, math.sin(phase23) ** 2
    b2 = ((1 - k) ** 2 - s23 / s14 * (1 + k) ** 2) / (1 - s23 / s14)
    b2 = min(max(b2, 0.0), 1.0)
    a_rs = math.sqrt(((1 + k) ** 2 - b2 * (1 - s14)) / s14)
    return a_rs, math.degrees(math.acos(math.sqrt(b2) / a_rs))


def time_bin(time: np.ndarray, y: np.ndarray, w: np.ndarray, nbins: int) -> tuple[np.ndarray, ...]:
    """Inverse-variance weighted means in equal-width time bins.

    Parameters
    ----------
    time : numpy.ndarray
        (B,) sample times (any unit).
    y : numpy.ndarray
        (B, C) values.
    w : numpy.ndarray
        (B, C) weights ``1/sigma**2``; 0 marks an unusable sample (its value is ignored,
        NaN allowed).
    nbins : int
        Number of equal-width bins over ``[min(time), max(time)]`` (last bin closed).

    Returns
    -------
    tuple of numpy.ndarray
        ``(t_b, y_b, w_b, width)``: mean time of the samples of each occupied bin (K,),
        weighted means (K, C) (NaN where no usable sample), summed weights (K, C)
        (``1/sqrt(w_b)`` is the propagated error) and the bin width (same unit as time).
        Bins holding no sample at all are dropped (K <= nbins).
    """
    time = np.asarray(time, np.float64)
    order = np.argsort(time, kind="stable")
    t = time[order]
    width = (t[-1] - t[0]) / nbins if t[-1] > t[0] else 1.0
    idx = np.clip(((t - t[0]) / width).astype(np.int64), 0, nbins - 1)
    starts = np.flatnonzero(np.diff(np.concatenate(([-1], idx))))
    ws = np.where(w[order] > 0, w[order], 0.0)
    ys = np.where(ws > 0, y[order], 0.0)
    sw = np.add.reduceat(ws, starts, axis=0)
    swy = np.add.reduceat(ws * ys, starts, axis=0)
    counts = np.diff(np.concatenate((starts, [t.size])))
    t_b = np.add.reduceat(t, starts) / counts
    with np.errstate(invalid="ignore", divide="ignore"):
        y_b = np.where(sw > 0, swy / sw, np.nan)
    return t_b, y_b, sw, width


@dataclass(frozen=True)
class TransitEstimate:
    """Transit found in a white-light curve (box search refined by a trapezoid fit).

    All times in hours since the visit start; ``depth`` is the maximum fractional
    flux drop of the trapezoid (not limb-darkening corrected), ``snr`` its
    signal-to-noise ratio.
    """

    t0_h: float
    t0_err_h: float
    t14_h: float
    t23_h: float
    depth: float
    snr: float

    @property
    def contact_times(self) -> np.ndarray:
        """t1..t4 in hours since the visit start."""
        return np.array([self.t0_h - self.t14_h / 2, self.t0_h - self.t23_h / 2,
                         self.t0_h + self.t23_h / 2, self.t0_h + self.t14_h / 2])


def _baseline_design(s: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(s), s, s * s], axis=1)


def box_search(time_h: np.ndarray, flux: np.ndarray, weights: np.ndarray,
               min_width: int = 2) -> tuple[int, int, float, float]:
    """Best box-shaped dip over a quadratic baseline (exhaustive, vectorised).

    For every window of consecutive samples ``[i, j)`` the model
    ``a + b s + c s**2 - d * box`` is solved by weighted linear least squares
    (cumulative sums give every window's normal equations at once); the window
    with the largest ``d**2 / var(d)`` among ``d > 0`` wins.

    Parameters
    ----------
    time_h : numpy.ndarray
        (K,) sorted sample times (typically a few hundred time bins).
    flux : numpy.ndarray
        (K,) flux (any normalisation).
    weights : numpy.ndarray
        (K,) inverse variances (0 = unusable).
    min_width : int
        Minimum window length in samples.

    Returns
    -------
    (int, int, float, float)
        ``i``, ``j`` (window ``[i, j)``), depth ``d`` (flux units) and its S/N.
    """
    s = 2 * (time_h - time_h[0]) / max(time_h[-1] - time_h[0], 1e-12) - 1
    w = np.where(weights > 0, weights, 0.0)
    y = np.where(w > 0, flux, 0.0)
    powers = np.stack([s ** p for p in range(5)])
    S = (w * powers).sum(axis=1)
    Y = (w * y * powers[:3]).sum(axis=1)
    cw = np.concatenate([np.zeros((3, 1)), np.cumsum(w * powers[:3], axis=1)], axis=1)
    cy = np.concatenate([[0.0], np.cumsum(w * y)])
    n = s.size
    i, j = np.triu_indices(n + 1, k=min_width)
    keep = j - i <= n - 3
    i, j = i[keep], j[keep]
    W = cw[:, j] - cw[:, i]
    Wy = cy[j] - cy[i]
    N = np.empty((i.size, 4, 4))
    N[:, :3, :3] = np.array([[S[0], S[1], S[2]], [S[1], S[2], S[3]], [S[2], S[3], S[4]]])
    N[:, :3, 3] = N[:, 3, :3] = -W.T
    N[:, 3, 3] = W[0]
    rhs = np.column_stack([np.broadcast_to(Y, (i.size, 3)), -Wy])
    usable = np.concatenate([[0], np.cumsum(w > 0)])
    inside = usable[j] - usable[i]
    ok = (inside > 0) & (usable[-1] - inside >= 3)
    cov = np.zeros_like(N)
    cov[ok] = np.linalg.inv(N[ok])
    d = np.einsum("kj,kj->k", cov[:, 3, :], rhs)
    var_d = cov[:, 3, 3]
    score = np.where(ok & (d > 0) & (var_d > 0), d * d / np.where(var_d > 0, var_d, 1.0), -1.0)
    best = int(np.argmax(score))
    return int(i[best]), int(j[best]), float(d[best]), float(math.sqrt(max(score[best], 0.0)))


def _trapezoid(t: np.ndarray, t0: float, t14: float, tau: float) -> np.ndarray:
    return np.clip((t14 / 2 - np.abs(t - t0)) / max(tau, 1e-9), 0.0, 1.0)


_MIN_TRANSIT_SAMPLES = 12   #: usable white-light samples needed to locate a transit


def estimate_transit(time_h: np.ndarray, flux: np.ndarray, weights: np.ndarray, nbins: int = 300) -> TransitEstimate:
    """Find the transit in a white-light curve: box search, then a trapezoid fit.

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) times, hours since the visit start.
    flux : numpy.ndarray
        (B,) white-light flux (any normalisation; slow drifts are absorbed by a
        quadratic baseline).
    weights : numpy.ndarray
        (B,) inverse variances; 0 marks unusable samples.
    nbins : int
        The curve is first averaged into this many equal-width time bins for the
        trapezoid fit (the box search that starts it uses at most 120 bins).

    Returns
    -------
    TransitEstimate
        Mid-transit time (with its 1-sigma error from the fit covariance),
        durations, depth and S/N.  Contact points are those of the trapezoid
        (for a limb-darkened transit they sit within a few percent of T14 of the
        true ones).
    """
    n_usable = int(np.count_nonzero(np.asarray(weights) > 0))
    if n_usable < _MIN_TRANSIT_SAMPLES:
        raise ValueError(f"white-light curve has {n_usable} usable samples of {time_h.size}; at least "
                         f"{_MIN_TRANSIT_SAMPLES} are needed to locate the transit (are most frames flagged?)")
    t_b, f_b, w_b, _ = time_bin(time_h, flux[:, None], weights[:, None], min(nbins, time_h.size))
    good = w_b[:, 0] > 0
    t_b, f_b, w_b = t_b[good], f_b[good, 0], w_b[good, 0]
    level = np.median(f_b)
    f_b, w_b = f_b / level, w_b * level ** 2
    t_c, f_c, w_c, _ = time_bin(t_b, f_b[:, None], w_b[:, None], min(_BOX_BINS, t_b.size))
    i, j, depth, snr = box_search(t_c, f_c[:, 0], w_c[:, 0])
    t_start, t_end = t_c[i], t_c[j - 1]
    span = t_b[-1] - t_b[0]
    dt = span / max(t_b.size - 1, 1)
    dt_box = span / max(t_c.size - 1, 1)
    s = 2 * (t_b - t_b[0]) / max(span, 1e-12) - 1
    sqrt_w = np.sqrt(w_b)
    basis = _baseline_design(s)

    def residual(p: np.ndarray) -> np.ndarray:
        t0, t14, tau_frac, d = p[:4]
        model = (basis @ p[4:]) * (1 - d * _trapezoid(t_b, t0, t14, tau_frac * t14))
        return sqrt_w * (f_b - model)

    t14_0 = min(max(t_end - t_start + dt_box, 3 * dt), span)
    p0 = np.array([0.5 * (t_start + t_end), t14_0, 0.15, max(depth, 1e-6), 1.0, 0.0, 0.0])
    lower = [t_b[0], 2 * dt, 0.01, 0.0, -np.inf, -np.inf, -np.inf]
    upper = [t_b[-1], max(span, 2.5 * dt), 0.5, 1.0, np.inf, np.inf, np.inf]
    p0 = np.clip(p0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    fit = least_squares(residual, p0, bounds=(lower, upper), x_scale="jac")
    t0, t14, tau_frac, d = fit.x[:4]
    chi2 = float(fit.fun @ fit.fun)
    dof = max(t_b.size - p0.size, 1)
    cov = np.linalg.pinv(fit.jac.T @ fit.jac) * max(chi2 / dof, 1.0)
    t0_err = float(math.sqrt(max(cov[0, 0], 0.0)))
    d_err = math.sqrt(max(cov[3, 3], 1e-30))
    return TransitEstimate(float(t0), t0_err, float(t14), float(t14 * (1 - 2 * tau_frac)), float(d),
                           float(d / d_err))


def window_mask(time_h: np.ndarray, t1_h: float, t4_h: float, pad_frac: float) -> np.ndarray:
    """True for samples inside the transit window ``[t1 - pad, t4 + pad]``, ``pad = pad_frac * (t4 - t1)``.

    Parameters
    ----------
    time_h : numpy.ndarray
        Sample times, hours.
    t1_h, t4_h : float
        First and last contact, hours.
    pad_frac : float
        Padding on each side as a fraction of the total duration.
    """
    pad = pad_frac * (t4_h - t1_h)
    return (time_h >= t1_h - pad) & (time_h <= t4_h + pad)


def supersample_factor(exp_time_h: float, max_step_s: float = 60.0) -> int:
    """Batman supersampling so that each sub-exposure is at most ``max_step_s`` seconds (1 to 15)."""
    return int(min(max(math.ceil(exp_time_h * 3600.0 / max_step_s), 1), 15))


def _batman_params(geometry: Geometry, k: float, u: tuple[float, float]):
    import batman

    params = batman.TransitParams()
    params.t0 = 0.0
    params.per = geometry.period_d
    params.rp = k
    params.a = geometry.a_rs
    params.inc = geometry.inc_deg
    params.ecc = 0.0
    params.w = 90.0
    params.limb_dark = "quadratic"
    params.u = list(u)
    return params


def _batman_model(params, time_h: np.ndarray, geometry: Geometry, exp_time_h: float):
    import batman

    t_days = (np.asarray(time_h, np.float64) - geometry.t0_h) / 24.0
    factor = supersample_factor(exp_time_h)
    if factor > 1:
        return batman.TransitModel(params, t_days, supersample_factor=factor, exp_time=exp_time_h / 24.0)
    return batman.TransitModel(params, t_days)


def deficit_basis(time_h: np.ndarray, geometry: Geometry, k: float | np.ndarray,
                  exp_time_h: float = 0.0) -> np.ndarray:
    """Per-unit-depth deficit basis ``(E_a, E_b, E_c)`` of the quadratic limb-darkening law (module doc).

    Parameters
    ----------
    time_h : numpy.ndarray
        (M,) times, hours since the visit start.
    geometry : Geometry
        Orbit (``t0_h``, period, a/Rs, inclination).
    k : float or numpy.ndarray
        Radius ratio, scalar or (C,) per channel.
    exp_time_h : float
        Integration time of each sample in hours; the model is averaged over it
        (batman supersampling, one sub-step per minute at most).

    Returns
    -------
    numpy.ndarray
        (3, M) for a scalar ``k``, (C, 3, M) for an array.
    """
    ks = np.atleast_1d(np.asarray(k, np.float64))
    params = _batman_params(geometry, float(ks[0]), (0.0, 0.0))
    model = _batman_model(params, time_h, geometry, exp_time_h)
    out = np.empty((ks.size, 3, np.size(time_h)))
    for c, kc in enumerate(ks):
        params.rp = float(kc)
        for x, u in enumerate(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))):
            params.u = list(u)
            out[c, x] = (1.0 - model.light_curve(params)) * (LD_FLUX_WEIGHTS[x] / (kc * kc))
    return out[0] if np.ndim(k) == 0 else out


def ld_direction(u1: np.ndarray | float, u2: np.ndarray | float) -> np.ndarray:
    """Unit-depth coefficient vector ``beta / depth = (1 - u1 - u2, u1, u2) / Omega``, shape (..., 3)."""
    u1, u2 = np.asarray(u1, np.float64), np.asarray(u2, np.float64)
    omega = 1.0 - u1 / 3.0 - u2 / 6.0
    return np.stack([1.0 - u1 - u2, u1, u2], axis=-1) / omega[..., None]


def ld_from_beta(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(depth, u1, u2)`` from basis coefficients ``beta`` (..., 3) (module doc)."""
    beta = np.asarray(beta, np.float64)
    total = beta.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return beta @ LD_FLUX_WEIGHTS, beta[..., 1] / total, beta[..., 2] / total


def light_curve(time_h: np.ndarray, geometry: Geometry, depth: np.ndarray, u1: np.ndarray,
                u2: np.ndarray, exp_time_h: float = 0.0) -> np.ndarray:
    """Relative flux of one or several channels (batman, quadratic limb darkening).

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) hours since the visit start.
    geometry : Geometry
        Orbit.
    depth, u1, u2 : numpy.ndarray
        (C,) ``(Rp/Rs)**2`` and limb-darkening coefficients per channel.
    exp_time_h : float
        Integration time per sample, hours (supersampled when longer than a minute).

    Returns
    -------
    numpy.ndarray
        (B, C) flux, 1 out of transit.
    """
    depth, u1, u2 = (np.atleast_1d(np.asarray(a, np.float64)) for a in (depth, u1, u2))
    params = _batman_params(geometry, math.sqrt(depth[0]), (u1[0], u2[0]))
    model = _batman_model(params, time_h, geometry, exp_time_h)
    out = np.empty((np.size(time_h), depth.size))
    for c in range(depth.size):
        params.rp = math.sqrt(depth[c])
        params.u = [u1[c], u2[c]]
        out[:, c] = model.light_curve(params)
    return out


def red_noise_beta(z: np.ndarray, dt_h: float, scales_h: tuple[float, float] = (1 / 6, 0.5),
                   n_scales: int = 6) -> np.ndarray:
    """Time-averaging red-noise factor beta (Pont et al. 2006; Winn et al. 2008) per column.

    For block sizes ``n`` spanning ``scales_h`` (10-30 min by default, the
    ingress time scale), the scatter of block means of the normalised residuals
    is compared with the white-noise expectation ``sigma_1 / sqrt(n) *
    sqrt(K / (K - 1))``; beta is the median ratio over block sizes, floored at 1.

    Parameters
    ----------
    z : numpy.ndarray
        (M, C) residuals divided by their errors, time ordered, NaN where unusable.
    dt_h : float
        Sampling step, hours.
    scales_h : (float, float)
        Shortest and longest block duration, hours.
    n_scales : int
        Number of block sizes tried.

    Returns
    -------
    numpy.ndarray
        (C,) beta >= 1 (1 when the series is too short for blocks of >= 2 samples).
    """
    m, c = z.shape
    sizes = np.unique(np.round(np.geomspace(scales_h[0], scales_h[1], n_scales) / max(dt_h, 1e-12)).astype(int))
    sizes = sizes[(sizes >= 2) & (m // np.maximum(sizes, 1) >= 4)]
    if sizes.size == 0:
        return np.ones(c)
    ratios = np.empty((sizes.size, c))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma1 = np.nanstd(z, axis=0)
        for r, n in enumerate(sizes):
            blocks = m // n
            means = np.nanmean(z[: blocks * n].reshape(blocks, n, c), axis=1)
            ratios[r] = np.nanstd(means, axis=0) / (sigma1 / math.sqrt(n) * math.sqrt(blocks / (blocks - 1)))
        beta = np.nanmedian(ratios, axis=0)
    return np.where(np.isfinite(beta), np.maximum(beta, 1.0), 1.0)


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
    Used by tests, benchmarks and examples of the series stages.

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
