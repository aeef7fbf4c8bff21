r"""Scores of predicted transit spectra ``mu +- sigma`` against true depths.

All functions take arrays of shape ``(n_planets, n_bins)`` (a single planet may
be passed as ``(n_bins,)``); bin 0 is the FGS1 channel, bins 1.. are AIRS-CH0,
as in the challenge's ``wl_1..wl_283`` columns.

* :func:`challenge_score`: the 2025 Ariel challenge metric (Kaggle
  "ariel-gaussian-log-likelihood"): per value,

  .. math::

     s_{ij} = \frac{\log N(y_{ij} | \mu_{ij}, \sigma_{ij}) - \log N(y_{ij} | \bar y, s_y)}
                    {\log N(y_{ij} | y_{ij}, \sigma^{true}_j) - \log N(y_{ij} | \bar y, s_y)}

  with ``sigma`` clipped below at 1e-15, ``sigma_true`` 1e-6 for FGS1 and 1e-5
  for AIRS, the naive model ``(ybar, s_y)`` the mean and standard deviation of
  the evaluated labels unless given; the score is the weighted mean of
  ``s_ij`` (weight ``fgs_weight`` on bin 0, 1 elsewhere) clipped to [0, 1].
* :func:`gaussian_nll`: mean per-value negative log-likelihood.
* :func:`coverage`, :func:`calibration_curve`, :func:`expected_calibration_error`,
  :func:`per_bin_coverage`: interval coverage of ``mu +- q sigma`` where ``q``
  is the two-sided Gaussian quantile of the nominal level (0.68 -> 0.994).
* :func:`evaluate`: all of the above as one JSON-ready dict.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "FGS_WEIGHT",
    "FGS_SIGMA_TRUE",
    "AIRS_SIGMA_TRUE",
    "ECE_LEVELS",
    "Z_HIST_EDGES",
    "gaussian_quantile",
    "z_scores",
    "challenge_score",
    "challenge_score_raw",
    "gaussian_nll",
    "coverage",
    "per_bin_coverage",
    "calibration_curve",
    "expected_calibration_error",
    "z_stats",
    "z_histogram",
    "evaluate",
]

#: FGS1 weight used by the 1st-place code and public notebooks (Kaggle default argument: 1)
FGS_WEIGHT = 57.846
#: ideal sigma of the FGS1 bin (the metric's ``fsg_sigma_true``)
FGS_SIGMA_TRUE = 1e-6
#: ideal sigma of every AIRS bin
AIRS_SIGMA_TRUE = 1e-5
#: nominal levels over which the expected calibration error is averaged
ECE_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: z-score histogram edges; values beyond +-6 are counted in the end bins
Z_HIST_EDGES = np.linspace(-6.0, 6.0, 49)

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SIGMA_FLOOR = 1e-15


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def gaussian_quantile(level: float) -> float:
    """Half-width, in sigma, of the central Gaussian interval holding ``level`` (0.68 -> 0.9945)."""
    return float(ndtri(0.5 * (1.0 + level)))


def z_scores(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Standardised residuals ``(y - mu) / sigma``, shape ``(n_planets, n_bins)``."""
    return (_as_2d(y) - _as_2d(mu)) / _as_2d(sigma)


def _gaussian_loglik(y: np.ndarray, mu: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    return -_LOG_SQRT_2PI - np.log(sigma) - 0.5 * ((y - mu) / sigma) ** 2


def _naive_moments(y: np.ndarray, naive_mean: float | None, naive_sigma: float | None) -> tuple[float, float]:
    mean = float(np.mean(y)) if naive_mean is None else float(naive_mean)
    std = float(np.std(y)) if naive_sigma is None else float(naive_sigma)
    if not std > 0:
        raise ValueError(f"naive_sigma must be > 0 (got {std}); the labels are constant, pass naive_sigma")
    return mean, std


def challenge_score_raw(
    y: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    *,
    fgs_weight: float = FGS_WEIGHT,
    fgs_sigma_true: float = FGS_SIGMA_TRUE,
    airs_sigma_true: float = AIRS_SIGMA_TRUE,
    naive_mean: float | None = None,
    naive_sigma: float | None = None,
) -> float:
    """The 2025 challenge score before the final clip to [0, 1].

    Parameters
    ----------
    y, mu, sigma : ndarray, shape (n_planets, n_bins) or (n_bins,)
        True depths, predicted depths and predicted sigmas; bin 0 is FGS1.
    fgs_weight : float
        Weight of bin 0 (every AIRS bin has weight 1).
    fgs_sigma_true, airs_sigma_true : float
        Sigma of the ideal model for FGS1 and AIRS.
    naive_mean, naive_sigma : float, optional
        Constant reference Gaussian; default: mean and (population) standard
        deviation of ``y``.

    Returns
    -------
    float
        ``sum_ij w_j s_ij / sum_ij w_j`` (1 = truth with ``sigma_true``, 0 = naive model).
    """
    y, mu, sigma = _as_2d(y), _as_2d(mu), _as_2d(sigma)
    mean, std = _naive_moments(y, naive_mean, naive_sigma)
    n_bins = y.shape[1]
    sigma_true = np.full(n_bins, float(airs_sigma_true))
    sigma_true[0] = fgs_sigma_true
    gll_pred = _gaussian_loglik(y, mu, np.clip(sigma, _SIGMA_FLOOR, None))
    gll_true = -_LOG_SQRT_2PI - np.log(sigma_true)
    gll_mean = _gaussian_loglik(y, mean, std)
    s = (gll_pred - gll_mean) / (gll_true - gll_mean)
    w = np.ones(n_bins)
    w[0] = fgs_weight
    w = np.broadcast_to(w, s.shape)
    return float(np.sum(w * s) / np.sum(w))


def challenge_score(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, **kwargs: float | None) -> float:
    """The 2025 challenge score, clipped to [0, 1] (see :func:`challenge_score_raw` for arguments)."""
    return float(np.clip(challenge_score_raw(y, mu, sigma, **kwargs), 0.0, 1.0))


def gaussian_nll(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood per value, ``0.5 log(2 pi sigma^2) + 0.5 z^2``."""
    return float(-np.mean(_gaussian_loglik(_as_2d(y), _as_2d(mu), _as_2d(sigma))))


def coverage(z: np.ndarray, level: float) -> float:
    """Fraction of values inside the central Gaussian interval of ``level`` (``|z| <= q(level)``)."""
    return float(np.mean(np.abs(z) <= gaussian_quantile(level)))


def per_bin_coverage(z: np.ndarray, level: float = 0.68) -> np.ndarray:
    """Coverage of each bin over planets, shape ``(n_bins,)``."""
    return np.mean(np.abs(_as_2d(z)) <= gaussian_quantile(level), axis=0)


def calibration_curve(z: np.ndarray, levels: np.ndarray = ECE_LEVELS) -> np.ndarray:
    """Empirical coverage at each nominal level."""
    a = np.abs(np.ravel(z))
    return np.array([np.mean(a <= gaussian_quantile(p)) for p in levels])


def expected_calibration_error(z: np.ndarray, levels: np.ndarray = ECE_LEVELS) -> float:
    """Mean ``|empirical coverage - nominal level|`` over ``levels``."""
    return float(np.mean(np.abs(calibration_curve(z, levels) - np.asarray(levels))))


def z_stats(z: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and RMS of the z-scores."""
    z = np.ravel(z)
    return {"z_mean": float(np.mean(z)), "z_std": float(np.std(z)), "z_rms": float(np.sqrt(np.mean(z * z)))}


def z_histogram(z: np.ndarray, edges: np.ndarray = Z_HIST_EDGES) -> dict[str, list]:
    """Counts of the z-scores (clipped into the end bins) and the N(0, 1) expectation."""
    z = np.clip(np.ravel(z), edges[0], edges[-1])
    counts, _ = np.histogram(z, bins=edges)
    expected = z.size * np.diff(ndtr(edges))
    return {"edges": edges.tolist(), "counts": counts.tolist(), "normal": expected.tolist()}


def evaluate(
    y: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    *,
    fgs_weight: float = FGS_WEIGHT,
    fgs_sigma_true: float = FGS_SIGMA_TRUE,
    airs_sigma_true: float = AIRS_SIGMA_TRUE,
    naive_mean: float | None = None,
    naive_sigma: float | None = None,
) -> dict:
    """Every calibration metric of one set of predictions, JSON-ready.

    Returns
    -------
    dict
        ``challenge_score``, ``challenge_score_raw`` (unclipped), ``nll``,
        ``coverage_68``, ``coverage_95``, ``ece``, ``z_mean``, ``z_std``,
        ``z_rms``, ``per_bin_coverage_68`` (list, one per bin),
        ``calibration_curve`` (``nominal``/``empirical`` lists),
        ``z_histogram`` (``edges``/``counts``/``normal``), ``n_planets``,
        ``n_values``, ``naive_mean``, ``naive_sigma`` (the reference used),
        ``n_negative_mu`` (the published metric rejects a submission with
        negative values).
    """
    y, mu, sigma = _as_2d(y), _as_2d(mu), _as_2d(sigma)
    mean, std = _naive_moments(y, naive_mean, naive_sigma)
    score_args = {"fgs_weight": fgs_weight, "fgs_sigma_true": fgs_sigma_true,
                  "airs_sigma_true": airs_sigma_true, "naive_mean": mean, "naive_sigma": std}
    raw = challenge_score_raw(y, mu, sigma, **score_args)
    z = z_scores(y, mu, sigma)
    return {
        "challenge_score": float(np.clip(raw, 0.0, 1.0)),
        "challenge_score_raw": raw,
        "nll": gaussian_nll(y, mu, sigma),
        "coverage_68": coverage(z, 0.68),
        "coverage_95": coverage(z, 0.95),
        "ece": expected_calibration_error(z),
        **z_stats(z),
        "per_bin_coverage_68": per_bin_coverage(z, 0.68).tolist(),
        "calibration_curve": {"nominal": ECE_LEVELS.tolist(), "empirical": calibration_curve(z).tolist()},
        "z_histogram": z_histogram(z),
        "n_planets": int(y.shape[0]),
        "n_values": int(y.size),
        "naive_mean": mean,
        "naive_sigma": std,
        "n_negative_mu": int(np.count_nonzero(mu < 0)),
    }
