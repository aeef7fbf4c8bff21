"""The app's views: sidebar controls, one tab per stage, the summary tab.

Everything shown is derived from an :class:`spectramind_app.state.AppState`; the views hold
widgets and panes only.  Plots of a stage tab are refreshed only when that tab
is visible and its stage output changed (``Tabs(dynamic=True)`` renders the
active tab only), so a run refreshes one tab, not all of them; a re-run puts
the new data into the existing figures (:class:`spectramind_app.render.LivePlot`).
"""

from __future__ import annotations

import asyncio
import html
import io
import time
from typing import Any

import panel as pn

from calib_core.diagnostics import TIME_LABEL, Series, Table
from calib_core.stages import stage_info

from .downloads import SaveRun, StageArraysButton, results_button
from .investigate import investigation_tabs, link_stage_tabs
from .pixels import FRAME_STAGES, PixelInspector
from .render import LivePlot, render
from .state import DISPLAY_PARAMS, PROFILES, AppState
from .widgets import StageForm

__all__ = ["APP_CSS", "AppView", "StageTab", "SummaryTab", "gate_badge", "gate_level", "tab_label"]

APP_CSS = """
.qc-badge { display: inline-block; border-radius: 11px; padding: 2px 10px; margin: 2px 6px 2px 0;
            font-size: 12.5px; font-weight: 500; border: 1px solid transparent; white-space: nowrap; }
.qc-pass { background: #e3f4e8; color: #17612f; border-color: #9fd5b0; }
.qc-warn { background: #fff3d6; color: #8a5a00; border-color: #f0c36d; }
.qc-fail { background: #fde3e1; color: #9b1c13; border-color: #f1a19a; }
.qc-none { color: #666; font-size: 12.5px; }
.stage-head { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
.stage-title { font-size: 19px; font-weight: 600; color: #1d2b36; }
.chip { border-radius: 4px; padding: 1px 8px; font-size: 12px; font-weight: 600; text-transform: uppercase;
        letter-spacing: .03em; }
.chip-ran { background: #dbeafe; color: #1e40af; }
.chip-cached { background: #ede9fe; color: #5b21b6; }
.chip-skipped, .chip-disabled, .chip-notrun { background: #eef0f2; color: #555; }
.chip-failed { background: #fde3e1; color: #9b1c13; }
.chip-stale { background: #fff3d6; color: #8a5a00; }
.stage-note { color: #555; font-size: 13px; }
.sum-table { border-collapse: collapse; font-size: 13px; width: 100%; }
.sum-table th { text-align: left; background: #f0f3f6; padding: 4px 8px; font-weight: 600; }
.sum-table td { padding: 3px 8px; border-bottom: 1px solid #eceff2; vertical-align: top; }
.sum-kv td:first-child { color: #555; width: 150px; }
.mono { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
"""

_MARKER_COLOURS = {"stale": "#a86400", "off": "#8a8f98"}
_TAB_CSS = """
.bk-tab { padding: 6px 12px; font-size: 14px; }
.bk-tab::after { margin-left: 6px; font-size: 10.5px; font-weight: 600; text-transform: uppercase;
                 border-radius: 3px; padding: 0 4px; }
"""


def _tab_marker_css(n_tabs: int) -> str:
    """Tab-header CSS whose per-tab marker text and colour come from CSS variables (see ``_update_markers``).

    An unmarked tab keeps Bokeh's colours: the fill colour falls back to ``currentcolor``.
    """
    rules = [f".bk-tab:nth-child({i})::after {{ content: var(--tab-marker-{i}, none); }}\n"
             f".bk-tab:nth-child({i}) {{ -webkit-text-fill-color: var(--tab-marker-colour-{i}, currentcolor); }}"
             for i in range(1, n_tabs + 1)]
    return _TAB_CSS + "\n".join(rules)


def tab_label(stage: str) -> str:
    """Short tab label of a stage (``ADC``, ``CDS``, ``Photometry``, ``Top level calib``).

    The tab itself shows the stage's full title.
    """
    return stage.upper() if len(stage) <= 3 else stage.replace("_", " ").capitalize()


def gate_level(gate: Any) -> str:
    """``pass``, ``warn`` (failed, run continued) or ``fail`` (failed with ``action_on_fail: error``)."""
    if gate.passed:
        return "pass"
    return "fail" if gate.action == "error" else "warn"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def gate_badge(gate: Any) -> str:
    """HTML badge of one QC gate (css classes ``qc-badge qc-<level>``)."""
    level = gate_level(gate)
    text = f"{gate.name}: {_fmt(gate.value)} (needs {gate.threshold}) · {level}"
    tip = html.escape(gate.message or gate.name, quote=True)
    return (f"<span class='qc-badge qc-{level}' data-gate='{html.escape(gate.name, quote=True)}' "
            f"title='{tip}'>{html.escape(text)}</span>")


def _timing(rec: Any, stale: bool = False) -> str:
    """How the shown output was obtained: computed in N s, or reused from the cache (no time spent)."""
    text = ("reused from the cache (same inputs and config)" if rec.status == "cached"
            else f"{rec.status} in {rec.seconds:.2f} s" if rec.status == "ran" else rec.status)
    return html.escape(f"last run: {text}" if stale else text)


def _chip(kind: str, text: str) -> str:
    return f"<span class='chip chip-{kind}'>{html.escape(text)}</span>"


class StageTab(pn.viewable.Viewer):
    """One stage: its config widgets (left), status, QC badges and diagnostics (right).

    Parameters
    ----------
    state : AppState
        The session state.
    stage : str
        Stage name.
    """

    def __init__(self, state: AppState, stage: str, **params: Any):
        super().__init__(**params)
        self.state = state
        self.stage = stage
        self.title = stage_info(stage).title
        self._form: StageForm | None = None
        self.header = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["stage-header", f"stage-{stage}"],
                                   stylesheets=[APP_CSS], margin=(0, 10))
        self.badges = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["qc-badges", f"gates-{stage}"],
                                   stylesheets=[APP_CSS], margin=(0, 10))
        self.plots = pn.Column(sizing_mode="stretch_width", css_classes=["stage-plots", f"plots-{stage}"])
        self.tables = pn.Column(sizing_mode="stretch_width", css_classes=["stage-tables"])
        self._shown: tuple | None = None
        self._live: list[LivePlot | None] = []
        self.tap_handlers: dict[str, Any] = {}    #: plot title -> handler(x, y) of a click on that plot
        self._taps: list = []
        self._controls = pn.Column(pn.pane.HTML("<b>Configuration</b> <span class='stage-note'>calib."
                                                f"{html.escape(stage)}</span>", stylesheets=[APP_CSS]),
                                   width=330, css_classes=["stage-controls"], margin=(0, 10, 0, 0))
        # linked views of a frame stage (app/pixels.py): click a pixel, see its series
        self.inspector = PixelInspector(state, stage) if stage in FRAME_STAGES else None
        self.arrays = StageArraysButton(state, stage)
        results = pn.Column(self.header, self.badges, self.arrays.button, self.plots, self.tables,
                            *([self.inspector] if self.inspector is not None else []), sizing_mode="stretch_width")
        self._layout = pn.Row(self._controls, results, sizing_mode="stretch_width", name=self.title)

    @property
    def form(self) -> StageForm:
        """The stage's config widgets, built when first needed (a session only pays for the tabs it opens)."""
        return self._ensure_form()

    def _ensure_form(self) -> StageForm:
        if self._form is None:
            self._form = StageForm(self.state, self.stage)
            self._controls.append(self._form)
        return self._form

    def refresh_form(self) -> None:
        """Show the profile's values in the widgets, if they were built."""
        if self._form is not None:
            self._form.refresh()

    def marker(self) -> str:
        """Tab-header marker: ``off`` (disabled), ``stale`` (results predate a config change) or ``""``."""
        if not self.state.cfg.calib[self.stage].enabled:
            return "off"
        if self.stage in self.state.stale and self.state.result is not None:
            return "stale"
        return ""

    def _status_html(self) -> str:
        state = self.state
        rec = state.record(self.stage)
        parts = [f"<span class='stage-title'>{html.escape(self.title)}</span>"]
        if not state.cfg.calib[self.stage].enabled:
            parts.append(_chip("disabled", "disabled"))
            parts.append("<span class='stage-note'>enable it (calib."
                         f"{html.escape(self.stage)}.enabled) and run to see its diagnostics</span>")
        elif rec is None:
            parts.append(_chip("notrun", "not run"))
            parts.append("<span class='stage-note'>press Run chain</span>")
        else:
            stale = self.stage in state.stale
            # one chip: a stale stage's last status is history, told in the note
            parts.append(_chip("stale", "stale") if stale else _chip(rec.status, rec.status))
            where = rec.instrument or "planet"
            parts.append(f"<span class='stage-note'>{html.escape(where)} · {_timing(rec, stale)}"
                         + (f" · {html.escape(rec.reason)}" if rec.reason else "") + "</span>")
            if stale:
                parts.append("<span class='stage-note stage-stale'>config changed upstream or here: "
                             "re-run to update</span>")
        return f"<div class='stage-head'>{''.join(parts)}</div>"

    def _badges_html(self) -> str:
        rec = self.state.record(self.stage)
        if rec is None or rec.status == "skipped":
            return ""
        if not rec.gates:
            return "<span class='qc-none'>no QC gates evaluated</span>"
        return "<div class='qc-gates'>" + "".join(gate_badge(g) for g in rec.gates) + "</div>"

    def refresh_status(self) -> None:
        """Update the status line and the QC badges (cheap; done for every tab)."""
        self.header.object = self._status_html()
        self.badges.object = self._badges_html()
        self.arrays.refresh()

    def refresh_plots(self) -> None:
        """Build the widgets if needed; show the diagnostics if the shown stage output changed.

        The output is identified by the record's status, cache key and directory:
        a stage that was only read from the cache by a later run keeps its plots
        untouched.  Plots whose layout is unchanged (e.g. the same stage re-run
        with other settings) keep their figures and only get the new data
        (:class:`spectramind_app.render.LivePlot`).
        """
        self._ensure_form()
        rec = self.state.record(self.stage)
        token = (self.state.instrument, self.state.display,
                 rec and (rec.status, rec.instrument, rec.cache_key, rec.output_dir))
        if token == self._shown:
            return
        self._shown = token
        items = self.state.diagnostics(self.stage)
        plot_items = [item for item in items if not isinstance(item, Table)]
        table_items = [item for item in items if isinstance(item, Table)]
        if not self._update_live(plot_items):
            self._live = [self._live_plot(item, self._tap_handler(item) is not None) for item in plot_items]
            self._link_taps(plot_items)
            panes = [live.pane if live is not None else render(item) for live, item in zip(self._live, plot_items)]
            # one plot per row: two side by side cut titles, squeezed legends and made x ticks collide
            self.plots.objects = panes
        tables = [render(item) for item in table_items]
        if rec is not None and rec.status in ("ran", "cached") and not plot_items and not tables:
            if rec.metrics.get("skipped") and rec.metrics.get("method") == "none":
                text = (f"<b>method: none</b>: this stage passes its input through unchanged, so it has nothing "
                        f"to show. Set <span class='mono'>calib.{html.escape(self.stage)}.method</span> (left) to "
                        "another method and run to see its diagnostics.")
            else:
                text = "The engine returned no diagnostics for this stage with the current settings."
            tables.append(pn.pane.HTML(f"<span class='stage-note'>{text}</span>", stylesheets=[APP_CSS],
                                       css_classes=["no-diagnostics"]))
        self.tables.objects = [pn.FlexBox(*tables, sizing_mode="stretch_width")] if tables else []
        if self.inspector is not None:
            self.inspector.refresh()

    def _tap_handler(self, item: Any) -> Any:
        """What a click on plot ``item`` does: its title's entry in :attr:`tap_handlers`, or, in a frame stage's
        tab, on a series over the visit, show the frame taken at the clicked time in the pixel inspector."""
        handler = self.tap_handlers.get(getattr(item, "title", ""))
        if handler is None and self.inspector is not None and isinstance(item, Series) and item.xlabel == TIME_LABEL:
            handler = self.inspector.show_time
        return handler

    def _link_taps(self, plot_items: list) -> None:
        """A click on a plot with a handler (:meth:`_tap_handler`) calls it with the data (x, y)."""
        self._taps = []
        for live, item in zip(self._live, plot_items):
            handler = self._tap_handler(item)
            if live is not None and live.tap is not None and handler is not None:
                tap = live.tap
                tap.param.watch(lambda *e, t=tap, h=handler: t.x is not None and h(t.x, t.y), ["x", "y"])
                self._taps.append(tap)

    def _update_live(self, plot_items: list[dict]) -> bool:
        """Put new data into the shown figures; False (nothing changed) if their number or a layout differs."""
        if len(plot_items) != len(self._live) or not plot_items or None in self._live:
            return False
        elements = [live.prepare(item) for live, item in zip(self._live, plot_items)]
        if any(element is None for element in elements):
            return False
        for live, element in zip(self._live, elements):
            live.show(element)
        return True

    @staticmethod
    def _live_plot(item: dict, tap: bool = False) -> LivePlot | None:
        try:
            return LivePlot(item, tap=tap)
        except Exception:  # noqa: BLE001 -- unrenderable plot data is shown as a block by render()
            return None

    def __panel__(self) -> pn.Row:
        return self._layout


class SummaryTab(pn.viewable.Viewer):
    """All QC gates, timings, cache hits, run directory and config hash of the last run."""

    def __init__(self, state: AppState, **params: Any):
        super().__init__(**params)
        self.state = state
        self.pane = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["summary"], stylesheets=[APP_CSS])
        self._layout = pn.Column(self.pane, sizing_mode="stretch_width", name="Summary")

    def refresh(self) -> None:
        """Rebuild the summary from the state."""
        self.pane.object = self._html()

    def _html(self) -> str:
        state = self.state
        res = state.result
        info = [("profile", html.escape(state.profile)), ("dataset", html.escape(state.dataset)),
                ("config hash", f"<span class='mono config-hash'>{state.config_hash}</span>")]
        if res is None:
            return self._kv(info) + "<p class='stage-note'>No run yet: press <b>Run chain</b>.</p>"
        counts: dict[str, int] = {}
        for r in res.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        stale = ", ".join(state.stale) or "none"
        info += [("run status", html.escape(res.status) + (f" · {html.escape(res.message)}" if res.message else "")),
                 ("stages", html.escape(" · ".join(f"{v} {k}" for k, v in sorted(counts.items())))),
                 ("wall time", f"{state.last_run_seconds:.2f} s"),
                 ("last run's config hash", "same as above" if res.config_hash == state.config_hash
                  else f"<span class='mono'>{html.escape(res.config_hash)}</span> (profile edited since)"),
                 ("run dir", f"<span class='mono run-dir'>{html.escape(str(res.run_dir))}</span>"),
                 ("stale since run", html.escape(stale))]
        rows = []
        for r in res.records:
            title = html.escape(stage_info(r.stage).title)
            gates = "".join(gate_badge(g) for g in r.gates) or (html.escape(r.reason) if r.reason else "–")
            where = html.escape(r.instrument or "planet")
            seconds = f"{r.seconds:.2f}" if r.status == "ran" else "–"
            rows.append(f"<tr class='sum-row sum-{r.status}'><td>{title}</td><td>{where}</td>"
                        f"<td>{_chip(r.status, r.status)}</td><td>{seconds}</td><td>{gates}</td></tr>")
        table = ("<table class='sum-table sum-stages'><tr><th>stage</th><th>instrument</th><th>last run</th>"
                 "<th>seconds</th><th>QC gates</th></tr>" + "".join(rows) + "</table>")
        note = ("<p class='stage-note cache-note'>cached: the stage's stored output was reused (its inputs and "
                "config are unchanged), so no time was spent. A session's first run reuses the run of the same "
                "profile that the server computed once for every session.</p>"
                if any(r.status == "cached" for r in res.records) else "")
        return self._kv(info) + "<h3>Stages and QC gates</h3>" + table + note

    @staticmethod
    def _kv(rows: list[tuple[str, str]]) -> str:
        """Two-column table; the values are HTML already escaped by the caller."""
        body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
        return f"<table class='sum-table sum-kv'>{body}</table>"

    def __panel__(self) -> pn.Column:
        return self._layout


class AppView(pn.viewable.Viewer):
    """The whole app for one session: :attr:`sidebar` (data, profile, run, export) and :attr:`tabs`.

    Parameters
    ----------
    state : AppState
        The session state.

    Notes
    -----
    ``AppView(state)`` displays inline in a notebook (sidebar next to the
    tabs); :func:`spectramind_app.main.create_app` puts the same pieces into a template.
    """

    def __init__(self, state: AppState, **params: Any):
        super().__init__(**params)
        self.state = state
        self.stage_tabs: dict[str, StageTab] = {}
        self._last_notified: tuple[str, float] = ("", 0.0)
        self.summary = SummaryTab(state)
        # investigation tabs after the summary (app/lightcurves.py, app/compare.py, ...): each has refresh()
        self.extra_tabs = investigation_tabs(state, self)
        self.tabs = pn.Tabs(dynamic=True, sizing_mode="stretch_width", css_classes=["stage-tabs"])
        self.tabs.param.watch(self._on_active, "active")
        self._build_controls()
        self._build_tabs()
        state.param.watch(self._on_revision, "revision")
        state.param.watch(self._on_result, ["result", "instrument"])
        state.param.watch(self._on_stale, "stale")
        state.param.watch(self._on_error, ["error", "error_count"])
        state.param.watch(self._on_cfg, "cfg")
        state.param.watch(lambda event: self._update_rerun_label(), "running")
        state.param.watch(lambda *events: self._refresh_visible(), list(DISPLAY_PARAMS))

    # ------------------------------------------------------------------ layout

    def _build_controls(self) -> None:
        state = self.state
        self.dataset_select = pn.widgets.Select.from_param(state.param.dataset, label="Planet",
                                                           sizing_mode="stretch_width", css_classes=["pick-dataset"])
        # outline buttons: the selected instrument is the filled one
        self.instrument_select = pn.widgets.RadioButtonGroup.from_param(
            state.param.instrument, label="Instrument", sizing_mode="stretch_width", css_classes=["pick-instrument"],
            color="primary", variant="outline")
        self.profile_select = pn.widgets.Select(label="Profile", options=self._profile_options(),
                                                value=state.profile, sizing_mode="stretch_width",
                                                css_classes=["pick-profile"])
        self.profile_select.param.watch(self._on_profile, "value")
        self.upload = pn.widgets.FileInput(accept=".yaml,.yml", sizing_mode="stretch_width",
                                           css_classes=["upload-profile"])
        self.upload.param.watch(self._on_upload, "value")
        self.run_button = pn.widgets.Button(label="Run chain", color="primary", sizing_mode="stretch_width",
                                            css_classes=["run-chain"])
        self.run_button.on_click(self._on_run)
        self.rerun_button = pn.widgets.Button(label="Re-run from this stage", color="default",
                                              sizing_mode="stretch_width", css_classes=["rerun-stage"])
        self.rerun_button.on_click(self._on_rerun)
        self.progress = pn.indicators.Progress(value=0, max=1000, sizing_mode="stretch_width", bar_color="info",
                                               css_classes=["run-progress"], height=14)
        self.progress_text = pn.pane.HTML("idle", css_classes=["run-status"], sizing_mode="stretch_width",
                                          stylesheets=[APP_CSS], margin=(0, 10))
        self.download = pn.widgets.FileDownload(callback=self._export, filename=state.export_filename,
                                                label="Export profile YAML", color="success",
                                                sizing_mode="stretch_width", css_classes=["export-yaml"])
        self.results_download = results_button(state)
        self.save_run = SaveRun(state)
        display = [  # how the stage tabs draw their plots (calib_core.display); nothing is recomputed
            pn.widgets.RadioButtonGroup.from_param(state.param.hist_scale, name="Histogram counts",
                                                   css_classes=["display-hist"], sizing_mode="stretch_width",
                                                   variant="outline", color="primary"),
            pn.widgets.Select.from_param(state.param.stretch, name="Image colour stretch",
                                         css_classes=["display-stretch"], sizing_mode="stretch_width"),
            pn.widgets.Checkbox.from_param(state.param.clip, name="clip image colours to 1-99 %",
                                           css_classes=["display-clip"]),
            pn.widgets.RadioButtonGroup.from_param(state.param.depth_unit, name="Depth unit",
                                                   css_classes=["display-depth-unit"], sizing_mode="stretch_width",
                                                   variant="outline", color="primary"),
            pn.widgets.IntSlider.from_param(state.param.bin_channels, name="Spectrum: channels per bin",
                                            css_classes=["display-bin"], sizing_mode="stretch_width"),
        ]
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width",
                                   css_classes=["config-error"])
        refused = state.refused_planets
        self.refused_note = pn.pane.Alert(  # planets of the root that lead outside it: not offered, and why
            "Not offered: " + "; ".join(html.escape(r) for r in refused) if refused else "", alert_type="warning",
            visible=bool(refused), sizing_mode="stretch_width", css_classes=["refused-planets"])
        self.sidebar = pn.Column(
            pn.pane.Markdown("### Data", margin=(0, 10)), self.dataset_select, self.refused_note,
            pn.pane.Markdown("Instrument shown in the stage tabs", margin=(0, 10), css_classes=["instrument-label"]),
            self.instrument_select,
            pn.pane.Markdown("### Profile", margin=(0, 10)), self.profile_select,
            pn.pane.Markdown("or load an exported profile:", margin=(0, 10)), self.upload,
            pn.pane.Markdown("### Run", margin=(0, 10)), self.run_button, self.rerun_button, self.progress,
            self.progress_text, self.alert,
            pn.pane.Markdown("### Display", margin=(0, 10)),
            pn.pane.Markdown("Histogram counts (auto: each plot's own)", margin=(0, 10)), display[0], *display[1:3],
            pn.pane.Markdown("Depth unit", margin=(0, 10)), *display[3:],
            pn.pane.Markdown("### Export", margin=(0, 10)), self.download, self.results_download,
            pn.pane.Markdown("Keep this run (`runs/` under the data root):", margin=(0, 10)), self.save_run.name,
            self.save_run.button, self.save_run.note,
            pn.pane.Markdown("Reproduce on the command line:\n`spectramind calibrate --config-name <file>`",
                             margin=(0, 10), css_classes=["export-hint"]),
            sizing_mode="stretch_width", css_classes=["app-sidebar"])
        self._update_rerun_label()

    def show_tab(self, tab: Any) -> None:
        """Open the investigation tab ``tab`` (one of :attr:`extra_tabs`)."""
        for i, (_, t) in enumerate(self.extra_tabs):
            if t is tab:
                self.tabs.active = len(self.stage_tabs) + 1 + i

    def show_stage(self, stage: str) -> None:
        """Open the tab of ``stage`` (used by the investigation tabs)."""
        if stage in self.stage_tabs:
            self.tabs.active = list(self.stage_tabs).index(stage)

    def _build_tabs(self) -> None:
        stages = self.state.stages
        self.stage_tabs = {s: StageTab(self.state, s) for s in stages}
        for tab in self.stage_tabs.values():
            tab.refresh_status()
        link_stage_tabs(self)     # e.g. a click on the depths tab's spectrum opens the channel in Light curves
        self.summary.refresh()
        self.tabs[:] = [*((tab_label(s), t) for s, t in self.stage_tabs.items()), ("Summary", self.summary),
                        *((title, t) for title, t in self.extra_tabs)]
        self.tabs.stylesheets = [_tab_marker_css(len(self.stage_tabs))]
        self._update_markers()
        self.tabs.active = 0
        self._refresh_visible()

    def _update_markers(self) -> None:
        """Mark stale and disabled stages on the tab headers (the titles stay put).

        The stylesheet (:func:`_tab_marker_css`) is set once per set of tabs; a
        marker is two CSS variables in the tabs' inline style, which the browser
        applies without re-installing stylesheets or re-laying out the tabs.
        """
        styles = {}
        for i, tab in enumerate(self.stage_tabs.values(), start=1):
            marker = tab.marker()
            # every variable is always set: Bokeh applies the styles it is given, it does not remove old ones
            styles[f"--tab-marker-{i}"] = f"'{marker}'" if marker else "none"
            styles[f"--tab-marker-colour-{i}"] = _MARKER_COLOURS[marker] if marker else "currentcolor"
        self.tabs.styles = styles

    @property
    def active_stage(self) -> str | None:
        """Stage of the active tab (None on the summary tab)."""
        names = list(self.stage_tabs)
        return names[self.tabs.active] if 0 <= self.tabs.active < len(names) else None

    def _update_rerun_label(self) -> None:
        stage = self.active_stage
        enabled = stage is not None and stage in self.state.enabled
        self.rerun_button.label = (f"Re-run from {stage_info(stage).title}" if stage is not None
                                  else "Re-run from … (open a stage tab)")
        self.rerun_button.disabled = self.state.running or not enabled or self.state.result is None
        self.run_button.disabled = self.state.running

    def _refresh_visible(self) -> None:
        stage = self.active_stage
        extra = self.tabs.active - len(self.stage_tabs) - 1
        if stage is not None:
            self.stage_tabs[stage].refresh_plots()
        elif 0 <= extra < len(self.extra_tabs):
            self.extra_tabs[extra][1].refresh()
        else:
            self.summary.refresh()

    # ------------------------------------------------------------------ events

    def _on_active(self, event: Any) -> None:
        self._update_rerun_label()
        self._refresh_visible()

    def _on_revision(self, event: Any) -> None:
        with pn.io.hold():
            if list(self.stage_tabs) != self.state.stages:
                self._build_tabs()
            else:
                for tab in self.stage_tabs.values():
                    tab.refresh_form()
                    tab.refresh_status()
                self._update_markers()
            self.profile_select.param.update(options=self._profile_options(), value=self.state.profile)
            self.summary.refresh()
            self._update_rerun_label()

    def _on_result(self, *events: Any) -> None:
        if list(self.stage_tabs) != self.state.stages:
            return
        # freeze: Bokeh recomputes the document's model graph once, not once per updated figure
        with pn.io.hold(freeze=True):
            for tab in self.stage_tabs.values():
                tab.refresh_status()
            self._update_markers()
            self._refresh_visible()
            self._update_rerun_label()

    def _on_stale(self, event: Any) -> None:
        if list(self.stage_tabs) != self.state.stages:
            return  # a new profile with other stages: _on_revision rebuilds the tabs
        with pn.io.hold():
            for tab in self.stage_tabs.values():
                tab.refresh_status()
            self._update_markers()

    def _on_cfg(self, event: Any) -> None:
        self.download.filename = self.state.export_filename
        if self.active_stage is None:
            self.summary.refresh()

    def _on_error(self, *events: Any) -> None:
        message = self.state.error
        self.alert.param.update(object=message or " ", visible=bool(message))
        notify = any(e.name == "error_count" for e in events)
        now = time.monotonic()
        repeated = (message, now - self._last_notified[1] < 2.0) == (self._last_notified[0], True)
        if message and notify and not repeated and pn.state.notifications is not None:
            pn.state.notifications.error(message, duration=8000)
            self._last_notified = (message, now)

    def _profile_options(self) -> list[str]:
        """The built-in profiles, plus the uploaded file when one is loaded."""
        return [*PROFILES, *([self.state.profile] if self.state.profile not in PROFILES else [])]

    def _on_profile(self, event: Any) -> None:
        if event.new in PROFILES and event.new != self.state.profile:
            self.state.load_profile(event.new)

    def _on_upload(self, event: Any) -> None:
        if event.new:
            self.state.load_profile_file(self.upload.filename, event.new)

    def _export(self) -> io.StringIO:
        return io.StringIO(self.state.export_yaml())

    async def _on_run(self, event: Any) -> None:
        await self.run(None)

    async def _on_rerun(self, event: Any) -> None:
        await self.run(self.active_stage)

    async def run(self, from_stage: str | None = None) -> None:
        """Run the chain in a worker thread while the progress bar follows it.

        Parameters
        ----------
        from_stage : str, optional
            Recompute from this stage on; default: from the first stale stage.
        """
        state = self.state
        if state.running:
            return
        state.param.update(running=True, error="")
        try:
            seed = state.result is None and from_stage is None
            cfg = state.prepare_run(from_stage)
            self.progress.param.update(value=0, bar_color="info", active=False)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, state.execute, cfg, seed)
            done: set = set()
            while not done:        # progress every 0.1 s; the result as soon as the run ends
                self._show_progress()
                done, _ = await asyncio.wait({future}, timeout=0.1)
            outcome = future.result()
            state.finish_run(outcome)
            self._show_progress(failed=not outcome.ok)
        finally:
            state.running = False

    def _show_progress(self, failed: bool = False) -> None:
        p = self.state.progress
        self.progress.value = int(round(1000 * min(max(p.fraction, 0.0), 1.0)))
        if failed:
            self.progress.bar_color = "danger"
        elif p.fraction >= 1.0:
            self.progress.bar_color = "success"
        text = html.escape(p.text)
        if self.state.result is not None and text.endswith("done: ok"):
            counts: dict[str, int] = {}
            for r in self.state.result.records:
                counts[r.status] = counts.get(r.status, 0) + 1
            text += " · " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            text += f" · {self.state.last_run_seconds:.2f} s"
        self.progress_text.object = text

    def __panel__(self) -> pn.Row:
        return pn.Row(pn.Column(self.sidebar, width=320), self.tabs, sizing_mode="stretch_width")
