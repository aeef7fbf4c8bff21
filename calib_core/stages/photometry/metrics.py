"""QC metrics of the photometry stage: white-light scatter against its propagated error, centroids, flags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import median_filter

from ...robust import mad_std
from .flags import PhotFlag, flag_counts
from .pairs import SampleLayout

if TYPE_CHECKING:  # pragma: no cover
    from .config import PhotometryConfig
    from .step import Outputs

__all__ = ["WHITE_LIGHT_MIN_FINITE", "photometry_metrics", "robust_relative_scatter", "white_light"]

FGS1, AIRS = "FGS1", "AIRS-CH0"
#: a channel enters the white-light sum when finite in at least this fraction of the samples
WHITE_LIGHT_MIN_FINITE = 0.99


def robust_relative_scatter(flux: np.ndarray, window: int) -> float:
    """MAD-based relative scatter of a series after dividing by its running median.

    Parameters
    ----------
    flux : ndarray, shape (B,)
        Series (non-finite samples are dropped).
    window : int
        Running-median window (samples, odd), shrunk to at most an eighth of
        the series so that a short series' trend (e.g. a transit) is followed.

    Returns
    -------
    float
        ``1.4826 * MAD(flux / trend - 1)``; NaN with fewer than 3 samples.
    """
    f = np.asarray(flux, np.float64)
    f = f[np.isfinite(f)]
    if len(f) < 3:
        return float("nan")
    size = min(window, max(len(f) // 8, 3))
    trend = median_filter(f, size=size - (1 - size % 2), mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = f / trend - 1.0
    resid = resid[np.isfinite(resid)]
    return float(mad_std(resid)) if resid.size else float("nan")


def white_light(flux: np.ndarray, flux_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the channels finite in at least 99 % of the samples (or the most complete ones).

    A channel that is NaN in many samples would otherwise make the sum NaN for all of them.
    """
    complete = np.isfinite(flux).mean(axis=0)
    keep = complete >= min(WHITE_LIGHT_MIN_FINITE, complete.max())
    return flux[:, keep].sum(axis=1), flux_var[:, keep].sum(axis=1)


def photometry_metrics(out: "Outputs", layout: SampleLayout, cfg: "PhotometryConfig", instrument: str, method: str,
             background: str, frame_shape: tuple[int, int], counts: dict[str, int], ref: Any) -> dict:
    """QC metrics of a finished run (from the written outputs and the per-block ``counts``)."""
    flux, flux_var = np.asarray(out.flux), np.asarray(out.flux_var)
    flags = np.asarray(out.flags)
    cx, cy = np.asarray(out.cx), np.asarray(out.cy)
    unpaired = (flags & PhotFlag.UNPAIRED) != 0
    nonfinite = ((flags & PhotFlag.NONFINITE) != 0) & ~unpaired
    white, white_var = white_light(flux, flux_var)
    robust = robust_relative_scatter(white, cfg.quality_checks.trend_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = float(np.nanmedian(np.sqrt(white_var) / white))
    h, w = frame_shape
    if instrument == AIRS:
        rms = max(float(np.nanstd(cx)), float(np.nanstd(cy)))
        med_y = float(np.nanmedian(cy))
        margin = min(med_y, h - 1 - med_y)
        window_pixels = (2 * cfg.airs.half_width_rows + 1) * flux.shape[1]
    else:
        rms = max(float(np.nanstd(cx)), float(np.nanstd(cy)))
        med_x, med_y = float(np.nanmedian(cx)), float(np.nanmedian(cy))
        margin = min(med_x, w - 1 - med_x, med_y, h - 1 - med_y)
        window_pixels = np.pi * cfg.aperture.radius_px ** 2
    n_bad = np.asarray(out.n_bad)
    return {
        "instrument": instrument,
        "method": method,
        "background": background,
        "sample_mode": layout.mode,
        "n_frames_in": layout.n_frames,
        "n_samples_out": layout.n_samples,
        "n_unpaired_reads": layout.n_unpaired,
        "n_channels": int(flux.shape[1]),
        "n_nonfinite": int(nonfinite.sum()) + counts["n_nonfinite_input"],
        "n_nonfinite_flux": int(nonfinite.sum()),
        "n_nonfinite_input": counts["n_nonfinite_input"],
        "n_unpaired_samples": int(unpaired.any(axis=1).sum()),
        "n_flagged": flag_counts(flags),
        "flagged_fraction": float(np.count_nonzero(flags) / flags.size),
        "robust_std_rel": robust,
        "predicted_std_rel": predicted,
        "scatter_to_error": robust / predicted if predicted > 0 else float("nan"),
        "median_flux": float(np.nanmedian(white)),
        "median_centroid_x": float(np.nanmedian(cx)),
        "median_centroid_y": float(np.nanmedian(cy)),
        "centroid_rms_x": float(np.nanstd(cx)),
        "centroid_rms_y": float(np.nanstd(cy)),
        "centroid_rms_px": rms,
        "centroid_margin_px": float(margin),
        "sky_median": float(np.nanmedian(np.asarray(out.sky))),
        "bad_pixel_fraction": float(n_bad.sum() / (window_pixels * len(flux))),
        "n_bad_pixels_replaced": int(n_bad.sum()),
        "n_pixels_rejected": counts["n_pixels_rejected"],
        "reference": ref.to_meta() if instrument == FGS1 else {"y": ref.y},
    }
