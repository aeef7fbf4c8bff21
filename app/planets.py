"""The ``Planets`` tab: the planets of a ``spectramind batch`` output directory; a click opens one in the stage tabs.

The table (status, QC gates, chi2, white depth, and with labels the white depth's z against the
truth) comes from :func:`calib_core.runview.read_batch`; it sorts by any column and filters with
the header fields.  Clicking a planet rebuilds its run (:func:`calib_core.runview.load_result`),
loads the batch's profile, selects the planet when it belongs to the app's data root, and shows
the run in the stage tabs (outputs that the batch pruned show no diagnostics).

Only directories inside the app's data root or ``./runs`` (where ``spectramind`` writes by default,
relative to where the app was started) can be opened.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import panel as pn

from calib_core.runview import BATCH_COLUMNS, load_result, read_batch

from .state import AppState

__all__ = ["PlanetsTab", "TITLE", "batch_roots"]

TITLE = "Planets"
_CSS = ".pl-note { color: #555; font-size: 13px; }"


def batch_roots(state: AppState) -> list[Path]:
    """Directories under which a batch directory may be opened: the data root and ``./runs``."""
    roots = [Path.cwd().resolve() / "runs"]
    if state.data_root is not None:
        roots.insert(0, state.data_root)
    return roots


class PlanetsTab(pn.viewable.Viewer):
    """Planets of a batch directory.

    Parameters
    ----------
    state : AppState
        The session state.
    view : AppView
        The app view (its stage tabs are opened on a click).
    """

    def __init__(self, state: AppState, view: Any, **params: Any):
        super().__init__(**params)
        self.state = state
        self.view = view
        self.rows: list[dict] = []
        self.path = pn.widgets.TextInput(label="Batch directory (holds batch_summary.json)",
                                         placeholder="runs/batch", css_classes=["batch-dir"],
                                         sizing_mode="stretch_width")
        self.load_button = pn.widgets.Button(label="Open batch", color="primary", css_classes=["open-batch"],
                                             sizing_mode="stretch_width")
        self.load_button.on_click(lambda event: self.load(self.path.value))
        self.note = pn.pane.HTML("<span class='pl-note'>Point at a <span class='mono'>spectramind batch</span> "
                                 "output directory, then click a planet to open its run in the stage tabs.</span>",
                                 stylesheets=[_CSS], css_classes=["planets-note"], sizing_mode="stretch_width")
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=list(BATCH_COLUMNS)), disabled=True,
                                          show_index=False, header_filters=True, sizing_mode="stretch_width",
                                          layout="fit_data_stretch", css_classes=["planets-table"], height=420)
        self.table.on_click(self._on_click)
        roots = ", ".join(str(r) for r in batch_roots(state))
        controls = pn.Column(self.path, self.load_button,
                             pn.pane.HTML(f"<span class='pl-note'>allowed under: {html.escape(roots)}</span>",
                                          stylesheets=[_CSS]), width=330, margin=(0, 10, 0, 0))
        self._layout = pn.Row(controls, pn.Column(self.note, self.table, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width", name=TITLE)

    def refresh(self) -> None:
        """Nothing to recompute when shown: the table changes on *Open batch* only."""

    def _resolve(self, text: str) -> Path | None:
        if not text.strip():
            self.state.report_error("batch directory: empty; give the directory that holds batch_summary.json")
            return None
        raw = Path(text.strip()).expanduser()
        path = (raw if raw.is_absolute() else Path.cwd() / raw).resolve()
        roots = batch_roots(self.state)
        if not any(path == r or r in path.parents for r in roots):
            self.state.report_error(f"batch directory {text.strip()}: outside the allowed roots "
                                    f"({', '.join(map(str, roots))})")
            return None
        return path

    def load(self, text: str) -> bool:
        """Show the planets of batch directory ``text``; False (and an error shown) if refused."""
        path = self._resolve(text)
        if path is None:
            return False
        try:
            rows = read_batch(path)
        except ValueError as exc:  # DataError names the file and the problem
            self.state.report_error(str(exc))
            return False
        self.rows = rows
        frame = pd.DataFrame([{k: r[k] for k in BATCH_COLUMNS} for r in rows], columns=list(BATCH_COLUMNS))
        self.table.value = frame.round({"chi2_red_median": 3, "white_depth_ppm": 1, "white_depth_err_ppm": 1,
                                        "z_white": 2, "seconds": 1})
        ok = sum(r["status"] == "ok" for r in rows)
        self.note.object = (f"<span class='pl-note planets-count'>{len(rows)} planets ({ok} ok) in "
                            f"<span class='mono'>{html.escape(str(path))}</span>: click a row to open its run; "
                            "sort by a column header, filter with the fields below it.</span>")
        return True

    def _on_click(self, event: Any) -> None:
        try:   # event.row indexes the table's value (sorting and filtering in the browser do not change it)
            pid = self.table.value.iloc[event.row]["planet_id"]
        except (IndexError, KeyError, TypeError):
            return
        row = next((r for r in self.rows if str(r["planet_id"]) == str(pid)), None)
        if row is not None:
            self.open(row)

    def open(self, row: dict) -> bool:
        """Open the run of one planet row in the stage tabs; False (and an error shown) if it cannot be read."""
        state = self.state
        try:
            result = load_result(row["run_dir"])
            config = (Path(row["run_dir"]) / "config.yaml").read_bytes()
        except (ValueError, OSError) as exc:  # DataError names the file
            state.report_error(f"planet {row['planet_id']}: {exc}")
            return False
        planet = result.planet
        label = next((lbl for lbl, d in state.datasets.items()
                      if d.planet_id == getattr(planet, "planet_id", None) and d.root is not None
                      and Path(d.root) == Path(planet.root).resolve() and d.split == planet.split), None)
        if label is not None:
            state.dataset = label
        if not state.load_profile_file(f"batch_{row['planet_id']}.yaml", config):
            return False
        stale = [] if state.config_hash == result.config_hash else list(state.stages)
        state.param.update(result=result, stale=stale)
        where = "" if label is not None else " (its planet is not under the app's data root: shown, not re-runnable)"
        state.progress.text = f"opened planet {row['planet_id']} of the batch{where}"
        self.view.progress_text.object = html.escape(state.progress.text)
        self.view.show_stage("depths")
        return True

    def __panel__(self) -> pn.Row:
        return self._layout

