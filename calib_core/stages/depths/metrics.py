"""Metrics of the depths stage beyond the fit itself: errors against the noise limit, comparison with truth."""

from __future__ import annotations

import numpy as np

from .white import WhiteFit

__all__ = ["limit_metrics", "truth_metrics"]


def limit_metrics(out: dict, insts: list[str]) -> dict:
    """Achieved errors against the photon + read-noise limit (``sigma_noise_limit``), fitted channels only.

    ``sigma_to_limit_median`` / ``_p10`` / ``_p90`` and ``noise_limit_median_ppm`` over the
    AIRS-CH0 channels (else the first instrument), ``fgs1_sigma_to_limit`` and
    ``fgs1_noise_limit_ppm``.
    """
    main = "AIRS-CH0" if "AIRS-CH0" in insts else insts[0]
    rows = (out["instrument"] == insts.index(main)) & ~out["filled"]
    limit, sigma = out["sigma_noise_limit"][rows], out["sigma"][rows]
    ok = np.isfinite(limit) & (limit > 0) & np.isfinite(sigma)
    ratio = sigma[ok] / limit[ok]
    nan = float("nan")
    metrics = {
        "sigma_to_limit_median": float(np.median(ratio)) if ratio.size else nan,
        "sigma_to_limit_p10": float(np.percentile(ratio, 10)) if ratio.size else nan,
        "sigma_to_limit_p90": float(np.percentile(ratio, 90)) if ratio.size else nan,
        "noise_limit_median_ppm": float(np.median(limit[ok]) * 1e6) if ratio.size else nan,
    }
    if "FGS1" in insts:
        fgs = int(np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0])
        metrics.update(fgs1_noise_limit_ppm=float(out["sigma_noise_limit"][fgs] * 1e6),
                       fgs1_sigma_to_limit=float(out["sigma"][fgs] / out["sigma_noise_limit"][fgs]))
    return metrics


def truth_metrics(out: dict, truth: np.ndarray, wf: WhiteFit, insts: list[str], white_inst: str) -> dict:
    """Comparison with the labels: white depth z-scores and per-channel residual z statistics.

    The white-light truth is the white-light-weighted mean of the instrument's
    labels (the white deficit is exactly that mean of the channel deficits).
    """
    z = (out["mu"] - truth) / out["sigma"]
    idx = out["instrument"] == insts.index(white_inst)
    white_truth = float(out["white_weight"][idx] @ truth[idx])
    metrics = {
        "white_depth_truth": white_truth,
        "z_white": (wf.depth[white_inst] - white_truth) / wf.depth_err[white_inst],
        "residual_z_std": float(np.std(z)), "residual_z_mean": float(np.mean(z)),
        "residual_z_max_abs": float(np.max(np.abs(z))),
    }
    if "FGS1" in insts:
        fgs = int(np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0])
        metrics.update(fgs1_depth_truth=float(truth[fgs]), z_fgs1=float(z[fgs]))
    return metrics
