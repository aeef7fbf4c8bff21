"""Linear extraction weights: box/aperture with bad-pixel replacement, Horne optimal.

Every extraction method of this package reduces, for one sample, to a set of
linear weights ``L`` over the pixels of a frame such that

    flux = sum(L * (data - sky))          var = sum(L**2 * var_pix) + sum(L)**2 * var_sky

so the flux variance is propagated from the detector variance exactly, and
the same weights can be applied to two reads of a pair.

Arrays use a common layout ``(n, m, C)``: ``n`` samples, ``m`` pixels along
the extraction axis (FGS1: the flattened 32x32 frame with ``C = 1``; AIRS: the
detector rows of each of the ``C`` spectral columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Extraction",
    "replacement_weights",
    "replaced_fraction",
    "horne_weights",
    "weighted_flux",
    "weighted_variance",
    "fill_bad",
]


@dataclass
class Extraction:
    """Photometry of a block of samples (``n`` samples, ``C`` channels, detector column order)."""

    flux: np.ndarray          #: (n, C) float64, e- per sample
    flux_var: np.ndarray      #: (n, C) float64, e-^2
    sky: np.ndarray           #: (n, C) float64, background per pixel (e-)
    centroid_x: np.ndarray    #: (n,) float64, pixels
    centroid_y: np.ndarray    #: (n,) float64, pixels
    flags: np.ndarray         #: (n, C) uint16, :class:`calib_core.stages.photometry.flags.PhotFlag`
    n_bad: np.ndarray         #: (n, C) int, unusable pixels inside the extraction window
    n_rejected: np.ndarray    #: (n, C) int, pixels rejected as outliers (optimal / psf)


def fill_bad(image: np.ndarray, good: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Replace unusable pixels by the profile scaled to the good pixels (per column).

    Parameters
    ----------
    image : ndarray, shape (n, m, C)
        Background-subtracted data (e-).
    good : ndarray of bool, shape (n, m, C)
    profile : ndarray, shape (m, C) or (n, m, C)
        Expected flux fraction per pixel.

    Returns
    -------
    ndarray, shape (n, m, C)
        ``image`` on good pixels, ``P * F`` elsewhere with ``F`` the
        least-squares profile amplitude of the good pixels (0 if none).
    """
    prof = np.broadcast_to(profile, image.shape)
    num = np.where(good, image * prof, 0.0).sum(axis=1)
    den = np.where(good, prof * prof, 0.0).sum(axis=1)
    amp = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(good, image, prof * amp[:, None, :])


def replacement_weights(window: np.ndarray, profile: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Aperture/box weights with unusable pixels replaced by the profile-weighted estimate.

    A bad pixel ``i`` is replaced by ``P_i * F``, with ``F`` the flux that the
    good pixels of the window imply for the profile ``P``.  This makes the
    window sum ``sum_good(w d) * sum(w P) / sum_good(w P)``, i.e. weights
    ``w * good * k`` with ``k = sum(w P) / sum_good(w P)``.

    Parameters
    ----------
    window : ndarray, shape (n, m, C)
        Geometric window weights (0..1: aperture overlap or box rows).
    profile : ndarray, shape (n, m, C) or (m, C)
        Expected fraction of the flux in each pixel.
    good : ndarray of bool, shape (n, m, C)
        Usable pixels.

    Returns
    -------
    ndarray, shape (n, m, C)
        Flux weights (NaN for a window without usable flux).
    """
    wp = window * profile
    total = wp.sum(axis=1)
    kept = np.where(good, wp, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(kept > 0, total / kept, np.nan)
    return np.where(good, window, 0.0) * scale[:, None, :]


def replaced_fraction(window: np.ndarray, profile: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of the expected window flux ``sum(w P)`` that falls on the ``mask`` pixels.

    Parameters
    ----------
    window : ndarray, shape (n, m, C)
    profile : ndarray, shape (n, m, C) or (m, C)
    mask : ndarray of bool, broadcastable to (n, m, C)
        Pixels whose value is replaced.

    Returns
    -------
    ndarray, shape (n, C)
        In [0, 1] (1 for a window without expected flux).
    """
    wp = np.abs(window * profile)
    total = wp.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.where(mask, wp, 0.0).sum(axis=1) / total, 1.0)


def horne_weights(data: np.ndarray, profile: np.ndarray, var: np.ndarray, good: np.ndarray, *,
                  sigma_clip: float, max_iter: int,
                  reject_profile: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal-extraction weights (Horne 1986) with iterative outlier rejection.

    With a profile ``P`` (the fraction of the flux ``F`` in each pixel) and a
    variance model ``V``, the flux is ``F = sum(P d / V) / sum(P**2 / V)`` over
    the usable pixels, i.e. weights ``L = (P / V) / sum(P**2 / V)``.  ``V`` is
    Horne's variance model evaluated at the reference flux (the median
    detector variance of the reference stack): it does not depend on the
    sample's own noise, which would bias ``F`` low at small S/N.  Each
    iteration rejects, per column, the worst pixel with
    ``(d - A Q)**2 > sigma_clip**2 * V`` (one at a time, as in Horne's
    algorithm), where ``Q`` is ``reject_profile`` (default ``P``) and ``A`` its
    weighted least-squares amplitude.  Testing against an empirical ``Q``
    keeps a static mismatch of a model ``P`` from being "rejected" at every
    sample.

    Parameters
    ----------
    data : ndarray, shape (n, m, C)
        Background-subtracted data (e-).
    profile : ndarray, shape (n, m, C) or (m, C)
        Spatial profile (fraction of the flux per pixel; 0 outside the
        extraction window).  An empirical profile may be slightly negative in
        noise-dominated pixels: clipping it would bias its normalisation.
    var : ndarray, shape (m, C) or (n, m, C)
        Variance model (e-^2, > 0).
    good : ndarray of bool, shape (n, m, C)
        Usable pixels.
    sigma_clip : float
        Rejection threshold (sigma).
    max_iter : int
        Rejection iterations (>= 0).
    reject_profile : ndarray, shape (n, m, C) or (m, C), optional
        Expected data shape for the outlier test (default ``profile``).

    Returns
    -------
    L : ndarray, shape (n, m, C)
        Flux weights on the retained pixels.
    n_rejected : ndarray of int, shape (n, C)
        Pixels rejected as outliers.
    """
    prof = np.broadcast_to(profile, data.shape)
    test = prof if reject_profile is None else np.broadcast_to(reject_profile, data.shape)
    inv_var = np.broadcast_to(1.0 / np.asarray(var, np.float64), data.shape)
    use = good & (prof != 0)
    n_rejected = np.zeros((data.shape[0], data.shape[2]), np.int64)
    for it in range(max_iter + 1):
        pv = np.where(use, prof * inv_var, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = pv / (pv * prof).sum(axis=1)[:, None, :]
        if it == max_iter:
            break
        d = np.where(use, data, 0.0)
        tv = np.where(use, test * inv_var, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            amp = ((tv * d).sum(axis=1) / (tv * test).sum(axis=1))[:, None, :]
        z2 = np.where(use, (d - amp * test) ** 2 * inv_var, 0.0)
        worst = np.argmax(z2, axis=1)
        reject = np.take_along_axis(z2, worst[:, None, :], axis=1)[:, 0, :] > sigma_clip * sigma_clip
        if not reject.any():
            break
        n_idx, c_idx = np.nonzero(reject)
        use[n_idx, worst[n_idx, c_idx], c_idx] = False
        n_rejected += reject
    return weights, n_rejected


def weighted_flux(weights: np.ndarray, data: np.ndarray, sky: np.ndarray | float) -> np.ndarray:
    """``sum(L * (data - sky))`` along axis 1, ignoring pixels with zero weight.

    Parameters
    ----------
    weights, data : ndarray, shape (n, m, C)
        Flux weights and data (e-); non-finite data count only where the weight is non-zero.
    sky : ndarray or float, broadcastable to (n, m, C)
        Sky per pixel (e-).

    Returns
    -------
    ndarray, shape (n, C)
        Flux (e-).
    """
    used = weights != 0
    return (weights * np.where(used, data - sky, 0.0)).sum(axis=1)


def weighted_variance(weights: np.ndarray, var: np.ndarray, sky_var: np.ndarray | float) -> np.ndarray:
    """Variance of :func:`weighted_flux`: ``sum(L**2 var) + sum(L)**2 var_sky``.

    Parameters
    ----------
    weights, var : ndarray, shape (n, m, C)
        Flux weights and pixel variances (e-^2, independent pixels).
    sky_var : ndarray or float, broadcastable to (n, C)
        Variance of the sky level, fully correlated over the window (e-^2).

    Returns
    -------
    ndarray, shape (n, C)
        Flux variance (e-^2).
    """
    used = weights != 0
    wsum = weights.sum(axis=1)
    return (weights * weights * np.where(used, var, 0.0)).sum(axis=1) + wsum * wsum * sky_var
