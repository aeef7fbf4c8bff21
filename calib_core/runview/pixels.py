"""Linked views: one detector pixel of a frame stage's output over the visit, with its DQ flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..stages.errors import DataError
from ..store import StoredOutput

__all__ = ["PixelSeries", "frame_at", "pixel_at", "pixel_series"]


@dataclass
class PixelSeries:
    """One detector pixel of a frame stage's output over the visit."""

    stage: str
    instrument: str
    row: int
    column: int
    time_h: np.ndarray           #: (N,) hours since the visit start
    value: np.ndarray            #: (N,) electrons (NaN where the stage wrote NaN)
    dq: np.ndarray               #: (N,) uint16 DQ bits (:class:`calib_core.dq.DQ`)
    flags: dict[str, np.ndarray] = field(default_factory=dict)  #: DQ bit name -> frame indices with it set

    def plots(self) -> list:
        """Typed plot data: the series, each DQ bit's frames marked on it."""
        from ..diagnostics import Series

        base = Series(f"{self.stage.upper()} pixel (row {self.row}, column {self.column}) over the visit",
                      self.time_h, self.value, xlabel="time since visit start (h)", ylabel="electrons",
                      label="value", style="points")
        finite = np.where(np.isfinite(self.value), self.value, np.nanmedian(self.value) if
                          np.isfinite(self.value).any() else 0.0)
        base.overlay = [Series("", self.time_h[idx], finite[idx], label=name, style="points")
                        for name, idx in self.flags.items()]
        return [base]


def pixel_series(output: StoredOutput, row: int, column: int, stage: str = "", instrument: str = "") -> PixelSeries:
    """Time series of pixel ``(row, column)`` of a frame stage's stored output (``data``, ``dq``, ``frame_time_s``).

    Raises
    ------
    DataError
        The output keeps no frame planes (streamed or pruned) or the pixel is outside the detector.
    """
    from ..dq import DQ

    f = output.fields
    if "data" not in f or "frame_time_s" not in f:
        raise DataError(f"{output.path}: no frame planes stored (streamed or pruned): no pixel series")
    n, rows, cols = f["data"].shape
    if not (0 <= int(row) < rows and 0 <= int(column) < cols):
        raise DataError(f"{output.path}: pixel ({row}, {column}) outside the {rows} x {cols} detector")
    row, column = int(row), int(column)
    value = np.asarray(f["data"][:, row, column], np.float64)
    dq = np.asarray(f["dq"][:, row, column], np.uint16) if "dq" in f else np.zeros(n, np.uint16)
    time_h = np.asarray(f["frame_time_s"], np.float64) / 3600.0
    flags = {bit.name: np.flatnonzero(dq & int(bit)) for bit in DQ if np.any(dq & int(bit))}
    return PixelSeries(stage or str(output.meta.get("stage", "")), instrument or str(output.meta.get("instrument", "")),
                       row, column, time_h, value, dq, flags)


def pixel_at(x: float, y: float) -> tuple[int, int]:
    """``(row, column)`` of the detector pixel under a click at image coordinates ``(x, y)``.

    Detector images are drawn with pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``
    (:class:`calib_core.diagnostics.Image`, detector form).
    """
    return int(math.floor(float(y))), int(math.floor(float(x)))


def frame_at(output: StoredOutput, time_h: float) -> int:
    """Index of the stored frame whose time is nearest to ``time_h`` (hours since the visit start).

    Raises
    ------
    DataError
        The output keeps no frame planes (streamed or pruned), or ``time_h`` is not a finite number.
    """
    f = output.fields
    if "data" not in f or "frame_time_s" not in f:
        raise DataError(f"{output.path}: no frame planes stored (streamed or pruned): no frame to show")
    t = float(time_h)
    if not math.isfinite(t):
        raise DataError(f"time {time_h!r}: expected hours since the visit start")
    times = np.asarray(f["frame_time_s"], np.float64) / 3600.0
    return int(np.nanargmin(np.abs(times - t)))
