"""The sidebar's ``Download results`` button: a zip of the session's last run.

The zip (:func:`calib_core.runview.results_zip`) holds ``depths.csv``, ``qc.json``, ``config.yaml`` and,
when present, ``depths_calibrated.csv``, the provenance files and the audit report.  The button is
enabled once a run has finished ``ok``.
"""

from __future__ import annotations

import io
from typing import Any

import panel as pn

from calib_core.runview import results_zip

from .state import AppState

__all__ = ["results_button", "results_filename"]


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
