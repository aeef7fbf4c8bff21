"""Reference-pixel common-mode correction of the ADC stage (border columns of every frame)."""

from __future__ import annotations

import math

import numpy as np

from ...robust import MAD_TO_SIGMA
from ...store import release_pages
from ..errors import DataError

__all__ = ["MEDIAN_VARIANCE_FACTOR", "QUIET_FACTOR", "REF_CLIP_SIGMA", "TEMPLATE_FRAMES", "common_mode",
           "common_mode_offsets", "reference_columns", "reference_levels"]

#: asymptotic variance of a sample median relative to ``sigma^2 / n`` (Gaussian)
MEDIAN_VARIANCE_FACTOR = math.pi / 2.0
#: frames per read kind used for the reference-pixel template
TEMPLATE_FRAMES = 255
#: reference pixels noisier than this many times the median reference scatter are left out
QUIET_FACTOR = 1.5
#: reference-pixel deviations beyond this many of their scatters are left out of the mean
REF_CLIP_SIGMA = 5.0


def reference_columns(width: int, border_px: int) -> np.ndarray:
    """Boolean mask of the ``border_px`` leftmost and rightmost detector columns.

    Raises
    ------
    ValueError
        When ``2 * border_px`` does not leave any science column.
    """
    if not 0 < 2 * border_px < width:
        raise DataError(f"calib.adc.reference_pixel.border_px = {border_px}: needs 0 < 2*border_px < "
                         f"frame width {width}")
    cols = np.zeros(width, bool)
    cols[:border_px] = cols[width - border_px:] = True
    return cols


def reference_levels(border: np.ndarray, template: np.ndarray, scatter: np.ndarray, *,
                     strategy: str = "border_mean") -> np.ndarray:
    """Per-frame common level of reference pixels relative to their static template.

    Subtracting a per-pixel template (each pixel's median over time for the
    frame's read kind) first removes the static spatial pattern of the border
    (stellar wings, bias structure), so the statistic over pixels is taken on a
    unimodal distribution centred on the frame's common-mode offset.

    Parameters
    ----------
    border : ndarray, shape (n, P)
        ``P`` reference pixels of ``n`` frames (e-).
    template : ndarray, shape (P,)
        Static level of each reference pixel (e-).
    scatter : ndarray, shape (P,)
        Temporal scatter of each reference pixel (e-).
    strategy : {"border_mean", "border_median"}
        ``border_mean``: mean after rejecting deviations beyond
        :data:`REF_CLIP_SIGMA` x scatter (cosmic rays, saturation);
        ``border_median``: plain median (robust, but quantised by the ADC step).

    Returns
    -------
    ndarray of float64, shape (n,)
        Reference level of each frame (e-).
    """
    diff = np.asarray(border, np.float32) - np.asarray(template, np.float32)
    if strategy == "border_median":
        return np.median(diff, axis=1).astype(np.float64)
    keep = np.abs(diff) <= REF_CLIP_SIGMA * np.asarray(scatter, np.float32)
    count = keep.sum(axis=1)
    total = np.where(keep, diff, 0).sum(axis=1, dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def common_mode_offsets(levels: np.ndarray, read_kind: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Common-mode offset of each frame: its reference level minus the time median of its read kind.

    Parameters
    ----------
    levels : ndarray, shape (n,)
        Per-frame reference levels (e-), see :func:`reference_levels`.
    read_kind : ndarray of int, shape (n,)
        0 first read, 1 signal read (the two kinds see different stellar wings).
    valid : ndarray of bool, shape (n,)
        Frames whose level is usable (False for dropped frames: offset 0).

    Returns
    -------
    ndarray of float64, shape (n,)
        Offsets (e-) to subtract from each frame.
    """
    levels = np.asarray(levels, np.float64)
    out = np.zeros_like(levels)
    for kind in np.unique(read_kind):
        sel = (read_kind == kind) & valid
        if sel.any():
            out[sel] = levels[sel] - np.median(levels[sel])
    return out


def common_mode(data: np.ndarray, ref_cols: np.ndarray, read_kind: np.ndarray, dropped: np.ndarray,
                strategy: str, chunk_frames: int) -> tuple[np.ndarray, float]:
    """Per-frame common-mode offsets from the reference columns of the electrons written by pass 1.

    For each read kind, up to :data:`TEMPLATE_FRAMES` evenly spaced live frames
    give every reference pixel a template (median) and a scatter (MAD); the
    quiet pixels (scatter <= :data:`QUIET_FACTOR` x the median scatter, i.e. no
    high read noise or bright wing) enter the per-frame statistic.

    Returns
    -------
    offsets : ndarray, shape (n,)
        Offsets to subtract (e-).
    estimate_var : float
        Variance of one offset estimate (e-^2), added to every pixel's read variance.
    """
    n = len(dropped)
    kinds = np.clip(read_kind, 0, 1)
    levels = np.zeros(n)
    templates, quiet, estimate_var = [], [], 0.0
    factor = MEDIAN_VARIANCE_FACTOR if strategy == "border_median" else 1.0
    for kind in (0, 1):
        live = np.flatnonzero((kinds == kind) & ~dropped)
        pick = live[np.unique(np.linspace(0, max(live.size - 1, 0), min(live.size, TEMPLATE_FRAMES)).astype(int))]
        stack = np.asarray(data[pick])[:, :, ref_cols] if pick.size else np.zeros((1, data.shape[1], 1))
        template = np.median(stack, axis=0)
        scatter = MAD_TO_SIGMA * np.median(np.abs(stack - template), axis=0)
        keep = scatter <= QUIET_FACTOR * np.median(scatter)
        templates.append((template[keep], scatter[keep]))
        quiet.append(keep)
        if pick.size:
            estimate_var = max(estimate_var, factor * float(np.median(scatter[keep])) ** 2 / int(keep.sum()))
    for start in range(0, n, chunk_frames):
        sl = slice(start, min(start + chunk_frames, n))
        border = np.asarray(data[sl])[:, :, ref_cols]
        for kind in (0, 1):
            sel = np.flatnonzero(kinds[sl] == kind)
            if sel.size:
                levels[start + sel] = reference_levels(border[sel][:, quiet[kind]], *templates[kind],
                                                       strategy=strategy)
        release_pages(data, frames=sl)
    return common_mode_offsets(levels, read_kind, ~dropped), estimate_var
