"""Linked views of a frame stage: click a pixel of the frame image to see that pixel's time series with its DQ
flags, and click a time on that series to see the frame taken then.

Shown under the diagnostics of the frame stages (ADC, dark, flat, CDS) whose output keeps its frame
planes; :func:`calib_core.runview.pixel_series` and :func:`calib_core.runview.frame_at` read them, this
module only draws.
"""

from __future__ import annotations

import html
from typing import Any

import holoviews as hv
import panel as pn

from calib_core.diagnostics import frame_image
from calib_core.runview import frame_at, pixel_at, pixel_series

from .render import render, render_element
from .state import AppState

__all__ = ["FRAME_STAGES", "PixelInspector"]

FRAME_STAGES = ("adc", "dark", "flat", "cds")
_CSS = ".px-note { color: #555; font-size: 13px; }"


class PixelInspector(pn.viewable.Viewer):
    """A frame of ``stage``'s output; a click on a pixel shows its series (DQ-flagged frames marked by bit).

    Parameters
    ----------
    state : AppState
        The session state (last result, instrument).
    stage : str
        A frame stage.
    """

    def __init__(self, state: AppState, stage: str, **params: Any):
        super().__init__(**params)
        self.state = state
        self.stage = stage
        self.note = pn.pane.HTML("", stylesheets=[_CSS], css_classes=["px-note", f"px-note-{stage}"],
                                 sizing_mode="stretch_width")
        self.frame = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False,
                                       css_classes=["px-frame", f"px-frame-{stage}"])
        self.series = pn.Column(sizing_mode="stretch_width", css_classes=["px-series", f"px-series-{stage}"])
        self._tap = hv.streams.Tap(x=None, y=None)
        self._tap.param.watch(self._on_tap, ["x", "y"])
        self._time_tap = hv.streams.Tap(x=None, y=None)         # a click on the pixel's series: that frame
        self._time_tap.param.watch(self._on_time_tap, ["x"])
        self.frame_index: int | None = None                       #: the frame shown
        self._output = None
        self._token: tuple | None = None
        self._layout = pn.Column(pn.pane.Markdown("#### Pixel time series", margin=(0, 10)), self.note,
                                 self.frame, self.series, sizing_mode="stretch_width",
                                 css_classes=["pixel-inspector"])

    def refresh(self) -> None:
        """Show the current output's frame (rebuilt when the shown output changed)."""
        rec = self.state.record(self.stage)
        token = (self.state.instrument, rec and (rec.status, rec.cache_key, rec.output_dir))
        if token == self._token:
            return
        self._token = token
        self.series.objects = []
        self._output = self.state.result.output(self.stage, rec.instrument) if rec and rec.output_dir else None
        f = self._output.fields if self._output is not None else {}
        if "data" not in f:
            self.frame.object = None
            self.note.object = ("<span class='px-note'>No frame planes stored for this output (streamed, or not "
                                "run): set <span class='mono'>cache.write_intermediate: true</span> to inspect "
                                "pixels.</span>" if rec is not None else "")
            return
        self.show_frame(f["data"].shape[0] // 2)
        self.note.object = "<span class='px-note'>Click a pixel to see its time series and DQ flags.</span>"

    def show_frame(self, index: int) -> None:
        """Show frame ``index`` of the output (pixel clicks keep working on it)."""
        image = frame_image(self._output, index, title=f"{self.stage.upper()} electrons: click a pixel")
        t_h = float(self._output.fields["frame_time_s"][int(index)]) / 3600.0
        image.title += f" at {t_h:.4f} h"
        element = render_element(image)
        self._tap.source = element
        self.frame.object = element.opts(tools=["hover", "tap"])
        self.frame_index = int(index)

    def _on_tap(self, *events: Any) -> None:
        if self._output is None or self._tap.x is None or self._tap.y is None:
            return
        row, column = pixel_at(self._tap.x, self._tap.y)
        self.show_pixel(row, column)

    def show_pixel(self, row: int, column: int) -> None:
        """Show pixel ``(row, column)``'s series, or the reason it cannot be shown."""
        try:
            px = pixel_series(self._output, row, column, self.stage, self.state.instrument)
        except ValueError as exc:  # DataError: outside the detector, planes not stored
            self.note.object = f"<span class='px-note px-error'>{html.escape(str(exc))}</span>"
            return
        flags = ", ".join(f"{name} ({len(idx)})" for name, idx in px.flags.items()) or "none"
        self.note.object = (f"<span class='px-note px-selected' data-row='{row}' data-column='{column}'>pixel "
                            f"(row {row}, column {column}): DQ flags {html.escape(flags)}; click a time on its "
                            "series to see that frame</span>")
        plots = px.plots()
        element = render_element(plots[0])
        self._time_tap.source = element
        self.series.objects = [pn.pane.HoloViews(element.opts(tools=["hover", "tap"]), sizing_mode="stretch_width",
                                                 linked_axes=False), *(render(p) for p in plots[1:])]

    def _on_time_tap(self, *events: Any) -> None:
        if self._time_tap.x is not None:
            self.show_time(self._time_tap.x)

    def show_time(self, time_h: float, y: Any = None) -> None:
        """Show the frame taken nearest to ``time_h`` (a click on any series over the visit in the stage's tab)."""
        if self._output is None:
            return
        try:
            index = frame_at(self._output, time_h)
        except ValueError as exc:  # DataError: planes not stored (streamed), the note says how to keep them
            self.note.object = f"<span class='px-note px-error'>{html.escape(str(exc))}</span>"
            return
        self.show_frame(index)

    def __panel__(self) -> pn.Column:
        return self._layout
