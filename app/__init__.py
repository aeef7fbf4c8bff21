"""SpectraMind calibration diagnostics: a Panel app on top of :mod:`calib_core` (installed as ``spectramind_app``).

* :class:`spectramind_app.state.AppState`: one session's profile, dataset choice and last run;
* :class:`spectramind_app.views.AppView`: the sidebar and one tab per stage (shows inline in a notebook);
* :func:`spectramind_app.main.create_app`: the templated app of one browser session;
* :func:`spectramind_app.serve.serve`: ``spectramind app``; :mod:`spectramind_app.report`: ``spectramind audit``.

The two commands reach the engine's command line through the ``spectramind.commands`` entry points, so
``import spectramind_app`` stays light: Panel is imported when a view is first needed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppState", "AppView"]


def __getattr__(name: str) -> Any:
    if name == "AppState":
        from .state import AppState

        return AppState
    if name == "AppView":
        from .views import AppView

        return AppView
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
