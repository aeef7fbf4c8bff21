"""The investigation tabs that follow the stage tabs and the summary: ``Light curves``, ``Compare``, ``Planets``."""

from __future__ import annotations

from typing import Any

from .state import AppState

__all__ = ["investigation_tabs"]


def investigation_tabs(state: AppState, view: Any) -> list[tuple[str, Any]]:
    """``(title, tab)`` of every investigation tab; a tab has ``refresh()`` (called when it is shown)."""
    from .compare import TITLE as COMPARE, CompareTab
    from .lightcurves import TITLE as LIGHT_CURVES, LightCurvesTab
    from .planets import TITLE as PLANETS, PlanetsTab

    return [(LIGHT_CURVES, LightCurvesTab(state)), (COMPARE, CompareTab(state)), (PLANETS, PlanetsTab(state, view))]
