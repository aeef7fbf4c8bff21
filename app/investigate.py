"""The investigation tabs that follow the stage tabs and the summary: ``Light curves``, ``Compare``, ``Planets``."""

from __future__ import annotations

from typing import Any

from .state import AppState

__all__ = ["investigation_tabs", "link_stage_tabs"]


def investigation_tabs(state: AppState, view: Any) -> list[tuple[str, Any]]:
    """``(title, tab)`` of every investigation tab; a tab has ``refresh()`` (called when it is shown)."""
    from .compare import TITLE as COMPARE, CompareTab
    from .lightcurves import TITLE as LIGHT_CURVES, LightCurvesTab
    from .planets import TITLE as PLANETS, PlanetsTab

    return [(LIGHT_CURVES, LightCurvesTab(state)), (COMPARE, CompareTab(state)), (PLANETS, PlanetsTab(state, view))]


def link_stage_tabs(view: Any) -> None:
    """Clicks in the stage tabs that open an investigation tab: the depths tab's spectrum opens its channel."""
    from .lightcurves import SPECTRUM_TITLE, LightCurvesTab

    lc = next((t for _, t in view.extra_tabs if isinstance(t, LightCurvesTab)), None)
    if lc is not None and "depths" in view.stage_tabs:
        def open_channel(x: float, y: float) -> None:
            if lc.open_wavelength(x):
                view.show_tab(lc)

        view.stage_tabs["depths"].tap_handlers[SPECTRUM_TITLE] = open_channel
