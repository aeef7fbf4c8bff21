"""Calibration maps checked against the frames they calibrate (detector stages)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["input_read_var", "map_label", "validate_map"]


def map_label(calibration: Any, instrument: str, name: str) -> str:
    """Human-readable name of a calibration map, with its file when known."""
    paths = getattr(calibration, "paths", None) or {}
    path = paths.get(name)
    return f"{instrument} calibration map '{name}'" + (f" ({path})" if path else "")


def validate_map(array: Any, *, label: str, frame_shape: tuple[int, int], check_shape: bool,
                 require_finite: bool, leading: bool = False) -> np.ndarray:
    """Check a calibration map against the frames it calibrates.

    Parameters
    ----------
    array : array_like
        The map; shape ``frame_shape`` (or ``(K, *frame_shape)`` with ``leading``).
    label : str
        Name used in error messages (see :func:`map_label`).
    frame_shape : tuple of int
        ``(H, W)`` of the frames.
    check_shape, require_finite : bool
        ``validation.check_shape_compatibility`` / ``validation.require_finite_inputs``.
    leading : bool
        The map has one leading axis (e.g. polynomial coefficients).

    Returns
    -------
    ndarray
        The map as an array.

    Raises
    ------
    ValueError
        Naming the map, its shape and the frame shape, or its count of non-finite values.
    """
    arr = np.asarray(array)
    if check_shape:
        ok = arr.ndim == 3 and arr.shape[1:] == tuple(frame_shape) if leading else arr.shape == tuple(frame_shape)
        if not ok:
            want = f"(K, {frame_shape[0]}, {frame_shape[1]})" if leading else str(tuple(frame_shape))
            raise DataError(f"{label}: shape {arr.shape} does not match the frames; expected {want}")
    if require_finite and arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise DataError(f"{label}: {bad} non-finite value(s) (validation.require_finite_inputs is true)")
    return arr


def input_read_var(source: Any, calibration: Any, instrument: str) -> tuple[np.ndarray, str]:
    """Read-noise variance per read (e-^2, in the input's units) and where it came from.

    Detector stages carry a ``read_var`` field (ADC: ``read^2``; flat divides it
    by ``flat^2``).  Without it (an input not written by these stages) the
    calibration ``read`` map squared is used.
    """
    field = source.output.fields.get("read_var")
    if field is not None:
        return np.asarray(field, np.float32), "upstream"
    read = validate_map(calibration.read, label=map_label(calibration, instrument, "read"),
                        frame_shape=source.frame_shape, check_shape=True, require_finite=False)
    return np.square(read.astype(np.float32)), "calibration"
