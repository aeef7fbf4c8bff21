"""The ``Light curves`` tab: one channel (or a binned range of channels) of the last run, opened from the spectrum.

A click on the spectrum (top) opens the nearest channel; the channel slider and the bin width
choose it too.  The engine (:func:`calib_core.runview.light_curves`) computes the raw, detrended
and phase-folded curves with the transit model and residuals from the run directory; this tab
only draws them (:func:`spectramind_app.render.render`).
"""

from __future__ import annotations

import html
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn

from calib_core.diagnostics import DEPTH_LABEL, Series
from calib_core.runview import channel_at, channel_grid, light_curves, lightcurve_plots, nearest_channel

from .render import PLOT_HEIGHT, render, render_element
from .state import AppState

__all__ = ["LightCurvesTab", "SPECTRUM_TITLE", "TITLE"]

TITLE = "Light curves"
SPECTRUM_TITLE = "Transmission spectrum"   #: the depths tab's spectrum: a click on it opens the channel here
_CSS = """
.lc-note { color: #555; font-size: 13px; }
.lc-title { font-size: 17px; font-weight: 600; color: #1d2b36; }
"""


class LightCurvesTab(pn.viewable.Viewer):
    """Per-channel light curves of the session's last run (the selected instrument).

    Parameters
    ----------
    state : AppState
        The session state (its last result and the instrument choice).
    """

    def __init__(self, state: AppState, **params: Any):
        super().__init__(**params)
        self.state = state
        self.channel = pn.widgets.IntSlider(label="Channel (index, ascending wavelength)", start=0, end=1, value=0,
                                            css_classes=["lc-channel"], sizing_mode="stretch_width")
        self.width = pn.widgets.IntSlider(label="Channels binned", start=1, end=64, value=1,
                                          css_classes=["lc-width"], sizing_mode="stretch_width")
        self.head = pn.pane.HTML("", css_classes=["lc-head"], stylesheets=[_CSS], sizing_mode="stretch_width")
        self.spectrum = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False,
                                          css_classes=["lc-spectrum"])
        self.plots = pn.Column(sizing_mode="stretch_width", css_classes=["lc-plots"])
        self._tap = hv.streams.Tap(x=None, y=None)
        self._tap.param.watch(self._on_tap, ["x", "y"])
        self._grid: np.ndarray | None = None
        self._shown: tuple | None = None
        self._token: tuple | None = None
        self.channel.param.watch(lambda e: self._show_curves(), "value_throttled")
        self.width.param.watch(lambda e: self._show_curves(), "value_throttled")
        controls = pn.Column(pn.pane.HTML("<b>Channel</b> <span class='lc-note'>or click the spectrum</span>",
                                          stylesheets=[_CSS]), self.channel, self.width,
                             width=330, margin=(0, 10, 0, 0))
        self._layout = pn.Row(controls, pn.Column(self.head, self.spectrum, self.plots, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width", name=TITLE)

    def refresh(self) -> None:
        """Show the last run's spectrum and the selected channel (rebuilt only when the run or instrument changed)."""
        result = self.state.result
        token = (id(result), self.state.runs, self.state.instrument)
        if token == self._token:
            return
        self._token = token
        self._shown = None
        if result is None or result.status != "ok":
            self._grid = None
            self.spectrum.object = None
            self.plots.objects = []
            self.head.object = "<span class='lc-note lc-empty'>No finished run yet: press <b>Run chain</b>.</span>"
            return
        inst = self.state.instrument
        try:
            grid, mu, sigma = channel_grid(result.run_dir, inst)
        except ValueError as exc:  # DataError: the run lacks the trace/depths outputs (stages disabled)
            self._grid = None
            self.spectrum.object = None
            self.plots.objects = []
            self.head.object = f"<span class='lc-note lc-empty'>{html.escape(str(exc))}</span>"
            return
        self._grid = grid
        n = grid.size
        with pn.io.hold():
            self.width.end = max(1, min(64, n))
            self.channel.end = max(1, n - 1)
            self.channel.disabled = n < 2
            if self.channel.value > n - 1:
                self.channel.value = n // 2
            elif self.channel.value == 0 and n > 1 and self._shown is None:
                self.channel.value = n // 2
            element = render_element(Series(f"{inst} spectrum: click a channel to open it", grid, mu,
                                            xlabel="wavelength (um)", ylabel=DEPTH_LABEL, yerr=sigma,
                                            label="depth", style="points"))
            self._tap.source = element
            self.spectrum.object = element.opts(height=PLOT_HEIGHT - 60, show_legend=False, tools=["hover", "tap"])
            self._show_curves()

    def open_wavelength(self, wavelength_um: float) -> bool:
        """Select the instrument and channel nearest to ``wavelength_um`` (a click on the depths tab's spectrum).

        Returns False (nothing changed) without a finished run.
        """
        result = self.state.result
        if result is None or result.status != "ok":
            return False
        try:
            instrument, channel = channel_at(result.run_dir, wavelength_um)
        except ValueError as exc:  # DataError
            self.state.report_error(f"open channel: {exc}")
            return False
        if self.state.instrument != instrument:
            self.state.instrument = instrument
        self.refresh()
        self.channel.value = channel
        self._show_curves()
        return True

    def _on_tap(self, *events: Any) -> None:
        if self._grid is None or self._tap.x is None:
            return
        self.channel.value = nearest_channel(self._grid, self._tap.x)
        self._show_curves()

    def _show_curves(self) -> None:
        result = self.state.result
        if self._grid is None or result is None:
            return
        first = int(self.channel.value)
        last = min(first + int(self.width.value) - 1, self._grid.size - 1)
        key = (self._token, first, last)
        if key == self._shown:
            return
        self._shown = key
        try:
            lc = light_curves(result.run_dir, self.state.instrument, first, last)
        except ValueError as exc:  # DataError: no usable sample in the channels, missing outputs
            self.head.object = f"<span class='lc-note lc-error'>{html.escape(str(exc))}</span>"
            self.plots.objects = []
            return
        self.head.object = (f"<span class='lc-title' data-first='{first}' data-last='{last}'>"
                            f"{html.escape(lc.label)}</span> <span class='lc-note'>depth "
                            f"{lc.depth * 1e6:.0f} &plusmn; {lc.depth_err * 1e6:.0f} ppm</span>")
        panes = [render(p) for p in lightcurve_plots(lc)]
        self.plots.objects = panes   # one per row: titles, legends and ticks keep their room

    def __panel__(self) -> pn.Row:
        return self._layout
