"""The ``Compare`` tab: two runs of the session side by side.

Every finished run of the session is kept as a :class:`calib_core.runview.RunSnapshot` (config,
QC gates, spectrum: small arrays held in memory, so later runs cannot change them).  For two of
them the tab shows the config diff (only the keys that differ), the two spectra overlaid with
their errors, their difference in units of the combined sigma, and the QC gates side by side.
The comparisons are computed by the engine (:mod:`calib_core.runview`); this tab only draws.
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from calib_core.diagnostics import DEPTH_LABEL, Series, break_between
from calib_core.runview import (RunSnapshot, compare_spectra, config_diff, gates_side_by_side, snapshot_result,
                                white_light_overlays)

from .render import render
from .state import AppState

__all__ = ["CompareTab", "TITLE"]

TITLE = "Compare"
MAX_RUNS = 20   #: snapshots kept per session (oldest dropped first)
_CSS = """
.cmp-table { border-collapse: collapse; font-size: 13px; }
.cmp-table th { text-align: left; background: #f0f3f6; padding: 4px 8px; font-weight: 600; }
.cmp-table td { padding: 3px 8px; border-bottom: 1px solid #eceff2; vertical-align: top; }
.cmp-key { font-family: ui-monospace, monospace; font-size: 12px; }
.cmp-note { color: #555; font-size: 13px; }
.cmp-pass { color: #17612f; } .cmp-fail { color: #9b1c13; font-weight: 600; }
"""


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _gate_cell(g: dict | None) -> str:
    if g is None:
        return "<td>–</td>"
    value = g.get("value")
    cls = "cmp-pass" if g.get("passed") else "cmp-fail"
    verdict = "pass" if g.get("passed") else "fail"
    return (f"<td class='{cls}'>{html.escape(_value(value))} "
            f"(needs {html.escape(_value(g.get('threshold')))}) · {verdict}</td>")


class CompareTab(pn.viewable.Viewer):
    """Two snapshots of the session's runs compared.

    Parameters
    ----------
    state : AppState
        The session state; every new result is snapshotted.
    """

    def __init__(self, state: AppState, **params: Any):
        super().__init__(**params)
        self.state = state
        self.snapshots: dict[str, RunSnapshot] = {}
        self.pick_a = pn.widgets.Select(label="Run A", options=[], css_classes=["compare-a"],
                                        sizing_mode="stretch_width")
        self.pick_b = pn.widgets.Select(label="Run B", options=[], css_classes=["compare-b"],
                                        sizing_mode="stretch_width")
        self.diff = pn.pane.HTML("", css_classes=["compare-diff"], stylesheets=[_CSS], sizing_mode="stretch_width")
        self.gates = pn.pane.HTML("", css_classes=["compare-gates"], stylesheets=[_CSS], sizing_mode="stretch_width")
        self.plots = pn.Column(sizing_mode="stretch_width", css_classes=["compare-plots"])
        self._shown: tuple | None = None
        for w in (self.pick_a, self.pick_b):
            w.param.watch(lambda e: self.refresh(), "value")
        state.param.watch(self._on_result, "result")
        controls = pn.Column(pn.pane.HTML("<b>Runs of this session</b><br><span class='cmp-note'>every finished "
                                          "run is kept for comparison</span>", stylesheets=[_CSS]),
                             self.pick_a, self.pick_b, width=330, margin=(0, 10, 0, 0))
        body = pn.Column(pn.pane.Markdown("#### Config: keys that differ", margin=(0, 10)), self.diff,
                         self.plots, pn.pane.Markdown("#### QC gates", margin=(0, 10)), self.gates,
                         sizing_mode="stretch_width")
        self._layout = pn.Row(controls, body, sizing_mode="stretch_width", name=TITLE)

    def _on_result(self, event: Any) -> None:
        result = event.new
        if result is None or getattr(result, "validated", None) is None:
            return
        label = f"run #{self.state.runs}: {self.state.profile} · {result.config_hash[:8]} · {result.status}"
        self.snapshots[label] = snapshot_result(result, result.validated.cfg, label)
        while len(self.snapshots) > MAX_RUNS:
            self.snapshots.pop(next(iter(self.snapshots)))
        labels = list(self.snapshots)
        with pn.io.hold():
            self.pick_a.options = labels
            self.pick_b.options = labels
            self.pick_a.value = labels[-2] if len(labels) > 1 else labels[-1]
            self.pick_b.value = labels[-1]

    def refresh(self) -> None:
        """Show the comparison of the two picked runs."""
        a, b = self.snapshots.get(self.pick_a.value), self.snapshots.get(self.pick_b.value)
        key = (self.pick_a.value, self.pick_b.value, len(self.snapshots))
        if key == self._shown:
            return
        self._shown = key
        if a is None or b is None:
            self.diff.object = ("<span class='cmp-note'>No runs yet: run the chain (twice, with a change) to "
                                "compare.</span>")
            self.gates.object = ""
            self.plots.objects = []
            return
        rows = config_diff(a.config, b.config)
        if rows:
            body = "".join(f"<tr class='cmp-row' data-key='{html.escape(k, quote=True)}'><td class='cmp-key'>"
                           f"{html.escape(k)}</td><td>{html.escape(_value(va))}</td><td>{html.escape(_value(vb))}"
                           "</td></tr>" for k, va, vb in rows)
            self.diff.object = (f"<table class='cmp-table'><tr><th>key ({len(rows)} differ)</th><th>A</th>"
                                f"<th>B</th></tr>{body}</table>")
        else:
            self.diff.object = "<span class='cmp-note cmp-same'>identical configs (same config hash)</span>"
        self.gates.object = self._gates_html(a, b)
        self.plots.objects = self._spectra(a, b)

    @staticmethod
    def _gates_html(a: RunSnapshot, b: RunSnapshot) -> str:
        rows = []
        for r in gates_side_by_side(a, b):
            differs = (r["a"] or {}).get("passed") != (r["b"] or {}).get("passed")
            mark = " <b>&#9888;</b>" if differs else ""
            rows.append(f"<tr><td>{html.escape(r['stage'])}</td><td>{html.escape(r['instrument'])}</td>"
                        f"<td class='cmp-key'>{html.escape(r['name'])}{mark}</td>{_gate_cell(r['a'])}"
                        f"{_gate_cell(r['b'])}</tr>")
        return ("<table class='cmp-table'><tr><th>stage</th><th>where</th><th>gate</th><th>A</th><th>B</th></tr>"
                + "".join(rows) + "</table>")

    @staticmethod
    def _spectra(a: RunSnapshot, b: RunSnapshot) -> list:
        try:
            d = compare_spectra(a, b)
        except ValueError as exc:  # DataError: a failed run, different channel grids
            return [pn.pane.HTML(f"<span class='cmp-note compare-nospectrum'>{html.escape(str(exc))}</span>",
                                 stylesheets=[_CSS])]
        gap = break_between(d.instrument, d.wavelength_um)
        wl = gap(d.wavelength_um, True)
        overlay = Series("Spectra A and B", wl, gap(d.mu_a), xlabel="wavelength (um)", ylabel=DEPTH_LABEL,
                         yerr=gap(d.sigma_a), label="A",
                         overlay=[Series("", wl, gap(d.mu_b), yerr=gap(d.sigma_b), label="B")])
        z = Series(f"Difference (B - A) / combined sigma (max |z| {d.max_abs_z:.2f})", wl, gap(d.z),
                   xlabel="wavelength (um)", ylabel="sigma", label="z", style="points")
        return [render(overlay), render(z), *(render(p) for p in white_light_overlays(a, b))]

    def __panel__(self) -> pn.Row:
        return self._layout
