"""SpectraMind calibration diagnostics: a Panel app on top of :mod:`calib_core`.

* :class:`app.state.AppState`: one session's profile, dataset choice and last run;
* :class:`app.views.AppView`: the sidebar and one tab per stage (shows inline in a notebook);
* :func:`app.main.create_app`: the templated app of one browser session;
* :func:`app.serve.serve`: ``spectramind app``.
"""

from .state import AppState
from .views import AppView

__all__ = ["AppState", "AppView"]
