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
        ``validation.check_shape_compatibility`` / ``validation.require_finite_inputs``.  Without the
        shape check a map that broadcasts to the frames (a scalar, one row or one column) is accepted and
        expanded; one that does not is still refused.
    leading : bool
        The map has one leading axis (e.g. polynomial coefficients).

    Returns
    -------
    ndarray
        The map as an array of shape ``frame_shape`` (``(K, *frame_shape)`` with ``leading``).

    Raises
    ------
    DataError
        Naming the map, its shape and the frame shape, or its count of non-finite values.
    """
    arr = np.asarray(array)
    want = f"(K, {frame_shape[0]}, {frame_shape[1]})" if leading else str(tuple(frame_shape))
    ok = arr.ndim == 3 and arr.shape[1:] == tuple(frame_shape) if leading else arr.shape == tuple(frame_shape)
    if not ok and check_shape:
        raise DataError(f"{label}: shape {arr.shape} does not match the frames; expected {want} "
                        "(validation.check_shape_compatibility is true)")
    if not ok:
        if leading and arr.ndim == 1:
            arr = arr[:, None, None]                  # one value per coefficient
        target = ((arr.shape[0] if arr.ndim == 3 else 1), *frame_shape) if leading else tuple(frame_shape)
        try:
            arr = np.array(np.broadcast_to(arr, target))
        except ValueError:
            raise DataError(f"{label}: shape {arr.shape} neither matches nor broadcasts to the frames' "
                            f"{want}") from None
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
