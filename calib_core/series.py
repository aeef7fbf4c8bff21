"""Helpers shared by the series stages (trace, phase, depths): input checks and plot-size reductions."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .stages.errors import DataError

__all__ = ["as_2d", "block_mean", "check_series"]


def check_series(stage: str, validation, flux: np.ndarray, err: np.ndarray, flags: np.ndarray,
                 time_s: np.ndarray, grid: np.ndarray, names: tuple[str, str, str]) -> None:
    """Input checks of a series stage (``calib.<stage>.validation``).

    Parameters
    ----------
    stage : str
        Stage name (for the messages).
    validation : calib_core.config.base.ValidationConfig
        ``check_shape_compatibility``: flux, error and flags share one (B, C)
        shape, time is (B,) and the channel grid (C,);
        ``require_finite_inputs``: no NaN/Inf flux or error in unflagged samples
        (the upstream stage must flag what it could not measure).
    flux, err, flags : numpy.ndarray
        (B, C) values, errors (or variances) and flags (nonzero = do not use).
    time_s, grid : numpy.ndarray
        (B,) times and (C,) channel wavelengths.
    names : (str, str, str)
        Field names of flux, error and flags, for the messages.

    Raises
    ------
    ValueError
        One line naming the stage, the field and the validation key.
    """
    if validation.check_shape_compatibility:
        n_frames, n_chan = flux.shape
        for key, shape, expected in ((names[1], err.shape, flux.shape), (names[2], flags.shape, flux.shape),
                                     ("time_s", time_s.shape, (n_frames,)), ("channel grid", grid.shape, (n_chan,))):
            if shape != expected:
                raise DataError(f"{stage}: field {key} has shape {shape}, expected {expected} "
                                 f"(calib.{stage}.validation.check_shape_compatibility)")
    if validation.require_finite_inputs:
        bad = int(np.count_nonzero((flags == 0) & ~(np.isfinite(flux) & np.isfinite(err))))
        if bad:
            raise DataError(f"{stage}: {bad} unflagged samples of {names[0]}/{names[1]} are NaN/Inf "
                             f"(calib.{stage}.validation.require_finite_inputs)")
        if not np.all(np.isfinite(time_s)):
            raise DataError(f"{stage}: time_s has NaN/Inf values (calib.{stage}.validation.require_finite_inputs)")


def as_2d(array: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """A series field as a (B, C) array of ``dtype``: (B,) becomes (B, 1)."""
    out = np.asarray(array, dtype)
    return out[:, None] if out.ndim == 1 else out


def block_mean(a: np.ndarray, max_rows: int, max_cols: int) -> np.ndarray:
    """Average a 2-D array in blocks so that it has at most (max_rows, max_cols) entries (NaN-aware).

    Used to keep plot arrays small (e.g. a time x wavelength image <= 400 x 300).
    """
    rows, cols = a.shape
    fr, fc = math.ceil(rows / max_rows), math.ceil(cols / max_cols)
    padded = np.full((math.ceil(rows / fr) * fr, math.ceil(cols / fc) * fc), np.nan)
    padded[:rows, :cols] = a
    blocks = padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))
