"""Display options applied to typed plot data (:mod:`calib_core.diagnostics`): what the app's display
controls change, computed here so that the app only draws.

* histograms: ``log`` or ``linear`` counts (``auto`` keeps each plot's own choice);
* images: a colour stretch (``linear``, ``log``, ``eq_hist``; the last two are applied by the browser's
  colour mapper) and an optional clip of the colour range to the 1st..99th percentile of the finite pixels;
* transit depths (series whose y label is :data:`DEPTH_LABEL`): ``(Rp/Rs)^2`` or ``ppm``, and binning by
  ``n`` adjacent channels (inverse-variance weighted mean, its error ``1/sqrt(sum w)``), never across a gap
  (a NaN row between instruments).

:func:`apply_display` returns new plot objects; the stage's stored output is never touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .diagnostics import DEPTH_LABEL, Histogram, Image, Plot, Series

__all__ = ["CLIP_PERCENTILES", "DEPTH_LABEL", "DEPTH_UNITS", "Display", "HIST_SCALES", "STRETCHES", "apply_display",
           "bin_depths"]

HIST_SCALES = ("auto", "log", "linear")
STRETCHES = ("linear", "log", "eq_hist")
DEPTH_UNITS = (DEPTH_LABEL, "ppm")
CLIP_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class Display:
    """How plots are shown (never what is computed)."""

    hist_scale: str = "auto"          #: one of :data:`HIST_SCALES`
    stretch: str = "linear"           #: one of :data:`STRETCHES`
    clip: bool = False                #: colour range clipped to :data:`CLIP_PERCENTILES`
    depth_unit: str = DEPTH_LABEL     #: one of :data:`DEPTH_UNITS`
    bin_channels: int = 1             #: adjacent channels averaged in depth spectra

    def __post_init__(self) -> None:
        for name, allowed in (("hist_scale", HIST_SCALES), ("stretch", STRETCHES), ("depth_unit", DEPTH_UNITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"display {name} = {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if not isinstance(self.bin_channels, int) or self.bin_channels < 1:
            raise ValueError(f"display bin_channels = {self.bin_channels!r}: expected an integer >= 1")


def bin_depths(x: np.ndarray, y: np.ndarray, yerr: np.ndarray | None, n: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Average ``n`` adjacent points within each NaN-separated segment (a gap stays a gap).

    With errors the mean is inverse-variance weighted and its error is ``1/sqrt(sum w)``; points without
    a finite value (or error) take no part.  Without errors it is the plain mean.  The last bin of a
    segment may hold fewer points.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    e = None if yerr is None else np.asarray(yerr, np.float64)
    if n <= 1 or not y.size:
        return x, y, e
    # the gap rows that break_between inserted: NaN value *and* NaN error (a missing channel has an error)
    gaps = ~np.isfinite(y) & (np.ones(len(y), bool) if e is None else ~np.isfinite(e))
    out_x: list[float] = []
    out_y: list[float] = []
    out_e: list[float] = []
    bounds = [0, *(np.flatnonzero(np.diff(gaps.astype(np.int8)) != 0) + 1), len(y)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if gaps[a]:
            out_x.extend(x[a:b])
            out_y.extend(y[a:b])
            out_e.extend([np.nan] * (b - a))
            continue
        for i in range(a, b, n):
            xs, ys = x[i:min(i + n, b)], y[i:min(i + n, b)]
            if e is None:
                ok = np.isfinite(ys)
                out_x.append(float(xs.mean()))
                out_y.append(float(ys[ok].mean()) if ok.any() else np.nan)
                continue
            es = e[i:min(i + n, b)]
            ok = np.isfinite(ys) & np.isfinite(es) & (es > 0)
            w = np.where(ok, 1.0 / np.where(ok, es, 1.0) ** 2, 0.0)
            out_x.append(float(xs.mean()))
            out_y.append(float((w * np.where(ok, ys, 0.0)).sum() / w.sum()) if ok.any() else np.nan)
            out_e.append(float(1.0 / np.sqrt(w.sum())) if ok.any() else np.nan)
    return np.asarray(out_x), np.asarray(out_y), None if e is None else np.asarray(out_e)


def _depth_series(plot: Series, d: Display) -> Series:
    scale = 1e6 if d.depth_unit == "ppm" else 1.0
    layers = []
    for layer in (plot, *plot.overlay):
        x, y, e = bin_depths(layer.x, layer.y, layer.yerr, d.bin_channels)
        layers.append(dataclasses.replace(layer, x=x, y=y * scale, yerr=None if e is None else e * scale,
                                          ylabel="depth (ppm)" if scale != 1.0 else layer.ylabel, overlay=[]))
    title = plot.title + (f" (binned by {d.bin_channels} channels)" if d.bin_channels > 1 else "")
    return dataclasses.replace(layers[0], title=title, overlay=layers[1:])


def apply_display(plot: Plot, d: Display) -> Plot:
    """``plot`` as the display options ask (the same object when they change nothing for it)."""
    if isinstance(plot, Histogram) and d.hist_scale != "auto":
        return dataclasses.replace(plot, logy=d.hist_scale == "log")
    if isinstance(plot, Image) and (d.stretch != "linear" or d.clip):
        clim = None
        if d.clip:
            data = np.asarray(plot.data, np.float64)
            finite = data[np.isfinite(data)]
            if finite.size:
                lo, hi = np.percentile(finite, CLIP_PERCENTILES)
                clim = (float(lo), float(hi)) if hi > lo else None
        return dataclasses.replace(plot, stretch=d.stretch, clim=clim)
    if isinstance(plot, Series) and plot.ylabel == DEPTH_LABEL and (d.depth_unit != DEPTH_LABEL or d.bin_channels > 1):
        return _depth_series(plot, d)
    return plot
