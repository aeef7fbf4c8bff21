"""The commands the app adds to ``spectramind`` (entry points ``spectramind.commands``).

* ``spectramind app``: serve the diagnostics app (:func:`spectramind_app.serve.serve`);
* ``spectramind audit``: the strict run of :func:`calib_core.audit.run_audit` (``audit.json``) plus its
  self-contained HTML page (:func:`spectramind_app.report.write_report`), built from the app's plot
  renderer.

Each function adds one sub-command to the engine's parser; Panel is imported only when a command runs,
so the engine's other commands do not pay for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_app", "add_audit"]


def add_app(commands: "argparse._SubParsersAction") -> None:
    """``spectramind app [--port N] [--address A] [--data-root DIR] [--no-show]``."""
    p = commands.add_parser("app", help="serve the Panel diagnostics app")
    p.add_argument("--port", type=int, default=5006, help="TCP port (0: a free one)")
    p.add_argument("--address", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset root the app may read (Kaggle layout)")
    p.add_argument("--no-show", action="store_true", help="do not open a browser")
    p.set_defaults(func=_app)


def _app(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(port=args.port, address=args.address, data_root=args.data_root, show=not args.no_show)


def add_audit(commands: "argparse._SubParsersAction") -> None:
    """``spectramind audit --config-name calib/strict [key=value ...]``."""
    from calib_core.cli import add_profile_args

    p = commands.add_parser("audit", help="strict run: every QC gate is an error; writes audit.html + audit.json")
    add_profile_args(p, "calib/strict")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from calib_core.audit import run_audit
    from calib_core.cli import compose_from_args, print_summary

    from .report import write_report

    result, payload = run_audit(compose_from_args(args))
    page = write_report(result, payload, result.run_dir / "audit.html")
    print_summary(result)
    print(f"audit report: {page}")
    return 0 if result.status == "ok" else 1
