"""Entry point of the served app: ``panel serve app/main.py [--args --data-root DIR]``.

``panel serve`` executes this file once per browser session, so every session
gets its own :class:`spectramind_app.state.AppState` (its own profile, run directory and
results); :func:`create_app` is also the factory that :func:`spectramind_app.serve.serve`
hands to ``pn.serve``.

The data root may be given as ``--args --data-root DIR`` or through the
environment variable ``SPECTRAMIND_DATA_ROOT``; without it only the built-in
demo planet is offered.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import holoviews as hv
import panel as pn

from spectramind_app.state import AppState, start_prewarm
from spectramind_app.views import AppView

__all__ = ["create_app", "data_root_from_args", "TITLE"]

TITLE = "SpectraMind · calibration diagnostics"
DATA_ROOT_ENV = "SPECTRAMIND_DATA_ROOT"

pn.extension("tabulator", notifications=True)   # tabulator: the Planets table
hv.extension("bokeh", logo=False)


def data_root_from_args(argv: Sequence[str] | None = None) -> Path | None:
    """The data root from ``--data-root DIR`` in ``argv`` or ``$SPECTRAMIND_DATA_ROOT`` (None: demo only)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-root", type=Path, default=None)
    args, _ = parser.parse_known_args(list(argv or []))
    root = args.data_root or os.environ.get(DATA_ROOT_ENV) or None
    return Path(root).expanduser().resolve() if root else None


def create_app(data_root: str | Path | None = None, profile: str = "nominal",
               autorun: bool = True) -> pn.template.FastListTemplate:
    """Build the app of one session.

    Parameters
    ----------
    data_root : str or pathlib.Path, optional
        The only dataset root the session may read (besides the demo planet).
    profile : str
        Built-in profile loaded first.
    autorun : bool
        Run the chain once when the page has loaded, so the first view shows diagnostics.

    Returns
    -------
    panel.template.FastListTemplate
    """
    state = AppState(data_root=data_root, profile=profile)
    view = AppView(state)
    template = pn.template.FastListTemplate(
        title=TITLE, sidebar=[view.sidebar], main=[view.tabs], sidebar_width=330, accent="#0b6e99",
        header_background="#0b3a53", theme_toggle=False, main_layout=None, font_url="",
        font="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif",
    )
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        pn.state.on_session_destroyed(lambda session_context: state.close())
        if autorun:
            pn.state.onload(view.run)
    return template


if __name__.startswith("bokeh_app"):
    import sys

    _root = data_root_from_args(sys.argv[1:])
    start_prewarm(_root)   # once per process; with `panel serve --warm` it starts before the first visitor
    create_app(data_root=_root).servable(title=TITLE)
