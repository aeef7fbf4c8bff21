"""Render the engine's typed plot data (:mod:`calib_core.diagnostics`) as HoloViews / Panel objects.

The engine (``Stage.diagnostics``) already reduced everything to small arrays:
histogram counts, one frame, downsampled series.  This module only maps each
kind to a view and computes nothing:

=====================  ==========================================================
plot data              view
=====================  ==========================================================
``Histogram``          :class:`holoviews.Histogram` (``logy`` honoured)
``Image``              :class:`holoviews.Image`: ``data[row, column]`` of a detector,
                       or, when ``x``/``y`` give ``(first, last)`` extents,
                       ``data[x, y]`` (e.g. "time x wavelength")
``Series``             :class:`holoviews.Curve` with :class:`holoviews.ErrorBars`
                       for ``yerr``; ``overlay`` series are drawn on top
``Bars``               :class:`holoviews.Bars`
``Table``              an HTML table
anything else          a labelled block listing the fields (arrays by shape only)
=====================  ==========================================================

:class:`LivePlot` shows a sequence of plots in one pane: when the next one has
the same layout (:func:`plot_layout`: kind, layers, labels) only the data, title
and ranges of the existing Bokeh figure change, which is much cheaper for the
server and the browser than building a new figure.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, Callable

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend the options below belong to)
import numpy as np
import panel as pn
from calib_core.diagnostics import Bars, Histogram, Image, Plot, Series, Table

__all__ = ["LivePlot", "render", "render_element", "plot_layout", "PLOT_HEIGHT"]

PLOT_HEIGHT = 300           #: height of every plot (px); widths follow the page
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_BASE_OPTS = dict(responsive=True, height=PLOT_HEIGHT, tools=["hover"], active_tools=["box_zoom"],
                  fontsize={"title": "10pt"}, toolbar="above")


def _text(plot: Any, key: str, default: str = "") -> str:
    value = getattr(plot, key, None)
    return default if value is None else str(value)


def _dim(label: str, fallback: str) -> hv.Dimension:
    """A dimension whose name is stable (for hover) and whose label is the engine's text."""
    label = label or fallback
    return hv.Dimension(fallback, label=label)


def _histogram(plot: Histogram) -> hv.Element:
    logy = bool(plot.logy)
    counts = np.asarray(plot.counts)
    element = hv.Histogram((np.asarray(plot.edges), counts),
                           kdims=[_dim(_text(plot, "xlabel"), "x")],
                           vdims=[_dim(_text(plot, "ylabel", "count"), "count")])
    opts = dict(_BASE_OPTS, title=_text(plot, "title"), color="#4c72b0", line_color=None, logy=logy)
    if logy:
        opts["ylim"] = (0.5, None)
    return element.opts(**opts)


def _span(first: float, last: float) -> tuple[float, float]:
    """An extent that can be drawn: a single value (one channel, one bin) gets a unit width."""
    return (first - 0.5, last + 0.5) if first == last else (first, last)


def _image(plot: Image) -> hv.Element:
    data = np.asarray(plot.data)
    kdims = [_dim(_text(plot, "xlabel"), "x"), _dim(_text(plot, "ylabel"), "y")]
    vdims = [_dim(_text(plot, "clabel"), "value")]
    if plot.x is not None and plot.y is not None:
        # extents form: data is indexed [x, y] ("time x wavelength"), x/y give (first, last) values
        (x0, x1), (y0, y1) = (_span(*plot.x), _span(*plot.y))
        raster, bounds = data.T, (x0, y0, x1, y1)
    else:
        # detector form: data is indexed [row, column] = [y, x], row 0 at the bottom
        raster = data
        bounds = (0, 0, data.shape[1], data.shape[0])
    element = hv.Image(raster[::-1], bounds=bounds, kdims=kdims, vdims=vdims)
    # colour stretch and range as the display options set them (calib_core.display): the browser maps them
    extra = {"clim": tuple(plot.clim)} if getattr(plot, "clim", None) else {}
    return element.opts(**_BASE_OPTS, title=_text(plot, "title"), colorbar=True, cmap="viridis",
                        clabel=_text(plot, "clabel"), cnorm=getattr(plot, "stretch", "linear"), **extra)


def _one_curve(plot: Series, xlabel: str, ylabel: str, color: str) -> hv.Overlay | hv.Element:
    kdims = [_dim(xlabel, "x")]
    vdims = [_dim(ylabel, "y")]
    label = _text(plot, "label")
    x, y = np.asarray(plot.x), np.asarray(plot.y)
    points_only = getattr(plot, "style", "line") == "points"
    if points_only:
        curve = hv.Scatter((x, y), kdims=kdims, vdims=vdims, label=label).opts(color=color, size=4)
    else:
        curve = hv.Curve((x, y), kdims=kdims, vdims=vdims, label=label).opts(color=color, line_width=1.5)
    if plot.yerr is None:
        return curve
    errors = hv.ErrorBars((x, y, np.asarray(plot.yerr)), kdims=kdims, vdims=[*vdims, "yerr"], label=label)
    if points_only:
        return errors.opts(color=color, line_color=color, alpha=0.5) * curve
    points = hv.Scatter((x, y), kdims=kdims, vdims=vdims, label=label)
    return errors.opts(color=color, line_color=color, alpha=0.5) * points.opts(color=color, size=4) * curve


def _curve(plot: Series) -> hv.Overlay:
    xlabel, ylabel = _text(plot, "xlabel"), _text(plot, "ylabel")
    layers = [_one_curve(p, xlabel, ylabel, _PALETTE[i % len(_PALETTE)]) for i, p in enumerate([plot, *plot.overlay])]
    overlay = hv.Overlay(layers)
    show_legend = any(_text(p, "label") for p in [plot, *plot.overlay])
    # the legend sits outside the axes (it used to cover the data)
    return overlay.opts(**_BASE_OPTS, title=_text(plot, "title"), show_legend=show_legend,
                        legend_position="right")


def _bars(plot: Bars) -> hv.Element:
    element = hv.Bars((list(map(str, plot.labels)), np.asarray(plot.values)),
                      kdims=[_dim(_text(plot, "xlabel"), "x")], vdims=[_dim(_text(plot, "ylabel"), "y")])
    return element.opts(**_BASE_OPTS, title=_text(plot, "title"), color="#4c72b0", xrotation=30)


_ELEMENTS: dict[type, Callable[[Any], hv.Element]] = {
    Histogram: _histogram,
    Image: _image,
    Series: _curve,
    Bars: _bars,
}


def render_element(plot: Plot) -> hv.Element | hv.Overlay:
    """The HoloViews object of a :class:`Histogram`, :class:`Image`, :class:`Series` or :class:`Bars`.

    Raises
    ------
    KeyError
        The plot has no HoloViews element (:class:`Table` and unknown kinds).
    """
    return _ELEMENTS[type(plot)](plot)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return html.escape(f"[{len(value)} values]")
    return html.escape(str(value))


def _table(plot: Table) -> pn.pane.HTML:
    rows = "".join(f"<tr><th>{html.escape(str(row[0]))}</th>{''.join(f'<td>{_cell(v)}</td>' for v in row[1:])}</tr>"
                   for row in plot.rows or [])
    title = html.escape(_text(plot, "title"))
    return pn.pane.HTML(f"<div class='diag-table'><div class='diag-title'>{title}</div><table>{rows}</table></div>",
                        sizing_mode="stretch_width", css_classes=["diag-table-pane"], stylesheets=[_TABLE_CSS])


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"{type(value).__name__} of {len(value)} values"
    return repr(value)


def _unknown(plot: Any, kind: str) -> pn.pane.HTML:
    kind = html.escape(kind)
    fields = dataclasses.asdict(plot) if dataclasses.is_dataclass(plot) else {"value": plot}
    items = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_describe(v))}</td></tr>"
                    for k, v in fields.items() if k != "title")
    title = html.escape(_text(plot, "title", "(untitled)"))
    return pn.pane.HTML(f"<div class='diag-table diag-unknown'><div class='diag-title'>{title} "
                        f"<span class='diag-kind'>{kind}</span></div>"
                        f"<table>{items}</table></div>", sizing_mode="stretch_width",
                        css_classes=["diag-unknown-pane"], stylesheets=[_TABLE_CSS])


_TABLE_CSS = """
.diag-table { font-size: 13px; }
.diag-title { font-weight: 600; margin: 4px 0 6px; }
.diag-kind { font-weight: 400; color: #a05a00; margin-left: 8px; }
.diag-table table { border-collapse: collapse; }
.diag-table th { text-align: left; font-weight: 500; color: #444; padding: 2px 14px 2px 0; }
.diag-table td { font-family: ui-monospace, monospace; padding: 2px 10px 2px 0; }
.diag-table tr:nth-child(odd) { background: #f6f7f9; }
"""


def render(plot: Plot) -> pn.viewable.Viewable:
    """A Panel object showing one plot; unknown kinds become a labelled block, never an error.

    Parameters
    ----------
    plot : calib_core.diagnostics.Plot
        Plot data from :meth:`calib_core.chain.RunResult.diagnostics`.

    Returns
    -------
    panel.viewable.Viewable
    """
    kind = getattr(plot, "kind", type(plot).__name__)
    if isinstance(plot, Table):
        return _table(plot)
    if type(plot) in _ELEMENTS:
        try:
            element = render_element(plot)
        except Exception as exc:  # malformed plot data is shown as such, never breaks the page
            return _unknown(plot, f"{kind} (unrenderable: {exc})")
        return pn.pane.HoloViews(element, sizing_mode="stretch_width", linked_axes=False,
                                 css_classes=["diag-plot", f"diag-{kind}"])
    return _unknown(plot, f"plot kind '{kind}' has no renderer")


def plot_layout(plot: Plot) -> tuple:
    """What fixes the structure of a plot's figure: kind, axis labels and, per layer, its label and error bars.

    Two plots with the same layout differ only in data and title, which a
    :class:`LivePlot` updates in place.
    """
    layers = [plot, *plot.overlay] if isinstance(plot, Series) else [plot]
    return (type(plot).__name__, _text(plot, "xlabel"), _text(plot, "ylabel"), _text(plot, "clabel"),
            bool(getattr(plot, "logy", False)), getattr(plot, "x", None) is not None and isinstance(plot, Image),
            getattr(plot, "stretch", None), getattr(plot, "clim", None),
            tuple((_text(p, "label"), getattr(p, "yerr", None) is not None, getattr(p, "style", "line"))
                  for p in layers))


class LivePlot:
    """One diagnostics plot whose Bokeh figure is kept while later plot data of the same layout arrives.

    Parameters
    ----------
    plot : calib_core.diagnostics.Plot
        Plot data of a kind with a HoloViews element (:class:`Histogram`, :class:`Image`,
        :class:`Series`, :class:`Bars`).
    tap : bool
        Record clicks on the figure in :attr:`tap`.

    Raises
    ------
    Exception
        Whatever :func:`render_element` raises for plot data that cannot be drawn
        (:func:`render` shows such data as a block instead).

    Notes
    -----
    The figure is a :class:`holoviews.DynamicMap` fed by a
    :class:`holoviews.streams.Pipe`; every element is ``framewise`` so axes and
    colour ranges follow the new data.
    """

    def __init__(self, plot: Plot, tap: bool = False):
        self.layout = plot_layout(plot)
        self._pipe = hv.streams.Pipe(data=_framewise(render_element(plot)))
        #: with ``tap``: a :class:`holoviews.streams.Tap` of clicks on the figure (data coordinates)
        self.tap = hv.streams.Tap(x=None, y=None) if tap else None
        if self.tap is None:
            dmap = hv.DynamicMap(lambda data: data, streams=[self._pipe])
        else:   # a stream of a DynamicMap must be one of its own streams to be linked to the figure
            dmap = hv.DynamicMap(lambda data, x, y: data, streams=[self._pipe, self.tap])
        self.pane = pn.pane.HoloViews(dmap, sizing_mode="stretch_width", linked_axes=False,
                                      css_classes=["diag-plot", f"diag-{plot.kind}"])

    def prepare(self, plot: Plot) -> hv.Element | hv.Overlay | None:
        """The element that :meth:`show` can put into this figure, or None if the layout differs or it cannot be drawn."""
        if plot_layout(plot) != self.layout:
            return None
        try:
            return _framewise(render_element(plot))
        except Exception:  # noqa: BLE001 -- the caller rebuilds, and render() shows the data as a block
            return None

    def show(self, element: hv.Element | hv.Overlay) -> None:
        """Replace the shown data by ``element`` (from :meth:`prepare`); the figure and its models stay."""
        self._pipe.send(element)


def _framewise(element: hv.Element | hv.Overlay) -> hv.Element | hv.Overlay:
    """``element`` with ranges recomputed for every frame (each layer of an overlay too)."""
    if isinstance(element, hv.Overlay):
        for layer in element:
            layer.opts(framewise=True)
    return element.opts(framewise=True)
