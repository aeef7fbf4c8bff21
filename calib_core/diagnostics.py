"""Typed plot data: what a stage's ``diagnostics`` returns and the app (or the audit page) draws.

The engine reduces everything to small arrays here -- histogram counts, one
frame, block-averaged series -- so the app only maps each kind to a view and
computes nothing:

=============  ================================================================
kind           content
=============  ================================================================
:class:`Histogram`  ``counts`` over ``edges`` (``logy`` for pile-ups)
:class:`Image`      ``data[row, column]`` of a detector, or with ``x``/``y``
                    extents ``data[x, y]`` (e.g. time x wavelength); an optional
                    :class:`Outline` (aperture, extraction box)
:class:`Series`     ``y`` against ``x`` with optional ``yerr``; ``overlay`` series
                    drawn on the same axes; ``style`` "line" (a NaN breaks the
                    line, e.g. across a gap between instruments) or "points"
:class:`Bars`       ``values`` per category label
:class:`Table`      rows of ``[name, value, ...]``
=============  ================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .store import StoredOutput

__all__ = ["DEPTH_LABEL", "TIME_LABEL", "Bars", "Histogram", "Image", "Outline", "Plot", "Series", "Table", "break_between", "decimate",
           "frame_image", "histogram"]


#: x label of series over the visit (hours since its start): in a frame stage's tab a click on one shows that frame
TIME_LABEL = "time since visit start (h)"

#: y label of transit-depth series (the display options convert and bin them: :mod:`calib_core.display`)
DEPTH_LABEL = "(Rp/Rs)^2"


@dataclass
class Plot:
    """Fields every plot kind has."""

    kind: ClassVar[str] = ""
    title: str


@dataclass
class Histogram(Plot):
    kind: ClassVar[str] = "histogram"
    counts: Any
    edges: Any
    xlabel: str = ""
    ylabel: str = "count"
    logy: bool = True


@dataclass
class Outline:
    """A shape drawn over an image: a circular aperture or the rows of a spectral extraction box."""

    shape: str                              #: "circle" | "box_rows"
    x: float | None = None                  #: circle centre (column)
    y: float | None = None                  #: circle centre (row)
    r: float | None = None                  #: circle radius (px)
    trace_row: Any = None                   #: box_rows: trace centre row per image column
    half_width_rows: float | None = None    #: box_rows: half height (rows)


@dataclass
class Image(Plot):
    kind: ClassVar[str] = "image"
    data: Any
    xlabel: str = "detector column"
    ylabel: str = "detector row"
    clabel: str = ""
    x: tuple[float, float] | None = None    #: first/last x value: ``data`` is indexed [x, y]
    y: tuple[float, float] | None = None
    outline: Outline | None = None
    stretch: str = "linear"                 #: colour stretch: "linear", "log" or "eq_hist"
    clim: tuple[float, float] | None = None   #: colour range (None: the data's)


@dataclass
class Series(Plot):
    kind: ClassVar[str] = "curve"
    x: Any
    y: Any
    xlabel: str = ""
    ylabel: str = ""
    yerr: Any = None
    label: str = ""
    overlay: list["Series"] = field(default_factory=list)
    style: str = "line"                     #: "line" (NaN breaks it) or "points" (markers, e.g. residuals)


@dataclass
class Bars(Plot):
    kind: ClassVar[str] = "bars"
    labels: list
    values: Any
    xlabel: str = ""
    ylabel: str = ""


@dataclass
class Table(Plot):
    kind: ClassVar[str] = "table"
    rows: list = field(default_factory=list)


def histogram(values: np.ndarray, bins: int = 128, range_: tuple[float, float] | None = None,
              title: str = "", xlabel: str = "", log: bool = True) -> Histogram:
    """A :class:`Histogram` of the finite ``values``."""
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if range_ is None:
        range_ = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if range_[0] == range_[1]:
            range_ = (range_[0] - 0.5, range_[1] + 0.5)
    counts, edges = np.histogram(values, bins=bins, range=range_)
    return Histogram(title, counts, edges, xlabel=xlabel, logy=log)


def break_between(groups: np.ndarray, x: np.ndarray):
    """``gap(values, is_x=False)``: ``values`` with a NaN inserted where ``groups`` changes (x: the midpoint).

    Drawn as a line, a spectrum then does not join the last FGS1 channel to the first AIRS-CH0 one.
    """
    groups = np.asarray(groups)
    cuts = np.flatnonzero(np.diff(groups) != 0) + 1
    x = np.asarray(x, np.float64)

    def gap(values: np.ndarray, is_x: bool = False) -> np.ndarray:
        fill = 0.5 * (x[cuts - 1] + x[cuts]) if is_x else np.nan
        return np.insert(np.asarray(values, np.float64), cuts, fill)

    return gap


def decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    """Block means of ``(x, y)`` so that at most ``max_points`` remain (non-finite ``y`` dropped).

    Returns plain lists, ready for JSON metrics and :class:`Series` plot data.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    block = max(1, math.ceil(len(y) / max_points))
    n = len(y) // block * block
    if n == 0:
        return x.tolist(), y.tolist()
    xs = x[:n].reshape(-1, block).mean(axis=1)
    ys = y[:n].reshape(-1, block).mean(axis=1)
    if n < len(y):
        xs = np.append(xs, x[n:].mean())
        ys = np.append(ys, y[n:].mean())
    return xs.tolist(), ys.tolist()


def frame_image(output: "StoredOutput", index: int, *, title: str, clabel: str = "electrons") -> Image:
    """:class:`Image` of one stored frame (never a cube).

    A streamed stage (its planes not stored, see :class:`calib_core.frames.StreamedSource`)
    keeps one frame as its ``preview`` field; that frame is shown.
    """
    if "data" not in output.fields and "preview" in output.fields:
        index = int(output.meta.get("preview_index", 0))
        return Image(f"{title} (frame {index}; streamed, frame planes not stored)",
                     np.array(output.fields["preview"][0]), clabel=clabel)
    data = output.fields["data"]
    index = int(min(max(index, 0), data.shape[0] - 1))
    return Image(f"{title} (frame {index})", np.array(data[index]), clabel=clabel)
