"""Downloads: the sidebar's ``Download results`` zip of the session's last run, and each stage tab's arrays.

The results zip (:func:`calib_core.runview.results_zip`) holds ``depths.csv``, ``qc.json``, ``config.yaml``
and, when present, ``depths_calibrated.csv``, the provenance files and the audit report; its button is
enabled once a run has finished ``ok``.  A stage tab's ``Download arrays`` zip
(:func:`calib_core.runview.stage_arrays_zip`) holds the shown output's ``.npy`` fields with their
``meta.json`` and ``checksums.json`` (fields over the download limit are listed in ``SKIPPED.txt``).
``Save run`` copies the session's run directory to ``<data root>/runs/<name>``
(:func:`calib_core.runview.save_run`), where it outlives the session.
"""

from __future__ import annotations

import html
import io
from typing import Any

import panel as pn

from pathlib import Path

from calib_core.runview import results_zip, save_run, stage_arrays_zip

from .state import AppState, demo_root

__all__ = ["SaveRun", "StageArraysButton", "results_button", "results_filename"]


def results_filename(state: AppState) -> str:
    """``spectramind_results_<planet>_<config hash>.zip`` of the last run."""
    res = state.result
    planet = getattr(getattr(res, "planet", None), "planet_id", None) if res is not None else None
    chash = res.config_hash[:8] if res is not None else "none"
    return f"spectramind_results_{planet if planet is not None else 'planet'}_{chash}.zip"


def results_button(state: AppState) -> pn.widgets.FileDownload:
    """A ``FileDownload`` whose zip is built from the run directory when clicked (disabled before an ok run)."""
    def make_zip() -> io.BytesIO:
        try:
            return io.BytesIO(results_zip(state.result.run_dir))
        except ValueError as exc:  # DataError: no ok run (the button is disabled then)
            state.report_error(f"download results: {exc}")
            raise

    button = pn.widgets.FileDownload(callback=make_zip, filename=results_filename(state), label="Download results",
                                     color="primary", sizing_mode="stretch_width", css_classes=["download-results"],
                                     disabled=True)

    def update(*events: Any) -> None:
        ok = state.result is not None and state.result.status == "ok" and not state.running
        button.param.update(disabled=not ok, filename=results_filename(state))

    state.param.watch(update, ["result", "running"])
    return button


class StageArraysButton:
    """A stage tab's ``Download arrays`` button for the output it shows (disabled without one, or when stale)."""

    def __init__(self, state: AppState, stage: str):
        self.state, self.stage = state, stage
        self.button = pn.widgets.FileDownload(callback=self._zip, filename=f"spectramind_{stage}.zip",
                                              label="Download arrays (zip)", disabled=True, width=220,
                                              css_classes=["download-arrays", f"download-arrays-{stage}"])
        state.param.watch(lambda *events: self.refresh(), ["running"])   # a result is published while running

    def _record(self) -> Any:
        rec = self.state.record(self.stage)
        usable = (rec is not None and rec.output_dir and rec.status in ("ran", "cached")
                  and self.stage not in self.state.stale and not self.state.running)
        return rec if usable else None

    def refresh(self) -> None:
        rec = self._record()
        where = (rec.instrument or "planet") if rec is not None else ""
        name = f"spectramind_{self.stage}_{where}_{rec.cache_key[:8]}.zip" if rec is not None else self.button.filename
        self.button.param.update(disabled=rec is None, filename=name)

    def _zip(self) -> io.BytesIO:
        rec = self._record()
        try:
            if rec is None:
                raise ValueError(f"no current {self.stage} output to download: run the chain first")
            data, skipped = stage_arrays_zip(self.state.result.run_dir, self.stage, rec.instrument)
        except ValueError as exc:  # DataError: no output, or a file that fails its checksum (named)
            self.state.report_error(f"download {self.stage} arrays: {exc}")
            raise
        return io.BytesIO(data)


class SaveRun:
    """Sidebar controls that keep the session's last run under ``<data root>/runs/<name>``."""

    def __init__(self, state: AppState):
        self.state = state
        self.name = pn.widgets.TextInput(placeholder="folder name, e.g. tuned-1", sizing_mode="stretch_width",
                                         css_classes=["save-run-name"])
        self.button = pn.widgets.Button(label="Save run under the data root", sizing_mode="stretch_width",
                                        css_classes=["save-run"], disabled=True)
        self.note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["save-run-note"], margin=(0, 10))
        self.button.on_click(self._save)
        state.param.watch(self._update, ["result", "running"])

    def _update(self, *events: Any) -> None:
        self.button.disabled = self.state.result is None or self.state.running

    def data_root(self) -> Path:
        """The session's data root (the built-in demo planet's when no dataset root is configured)."""
        root = self.state.cfg.data.root
        return Path(root) if root else demo_root(int(self.state.cfg.data.demo_seed))

    def _save(self, event: Any) -> None:
        if self.state.result is None:
            return
        try:
            dest = save_run(self.state.result.run_dir, self.data_root(), self.name.value_input or self.name.value)
        except ValueError as exc:  # DataError: a bad name, an existing folder, an unfinished run
            self.note.object = ""
            self.state.report_error(f"save run: {exc}")
            return
        self.note.object = f"<span class='stage-note'>saved to <span class='mono'>{html.escape(str(dest))}</span></span>"
