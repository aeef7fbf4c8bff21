"""Self-contained HTML audit report (``spectramind audit``).

Built from the same pieces as the app (the plot renderer and the QC badges) and
saved with inline resources, so the page opens offline with no server.
"""

from __future__ import annotations

import html
import os
import re
import uuid
from pathlib import Path
from typing import Any

import panel as pn
from bokeh.resources import INLINE

from .render import render
from .views import APP_CSS, gate_badge

__all__ = ["write_report"]

# Panel's page template links a favicon and MathJax from CDNs; the report needs neither, and it must
# open offline, so every external <script src>/<link href> is removed after saving.
_EXTERNAL = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>|<link[^>]*\bhref="https?://[^"]*"[^>]*/?>')

_REPORT_CSS = APP_CSS + """
body { font-family: system-ui, sans-serif; }
.audit-head { padding: 8px 0; }
.audit-ok { color: #1b6e2d; } .audit-failed { color: #9b1c13; }
"""


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td class='mono'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table class='sum-table sum-kv'>{body}</table>"


def _metrics_table(metrics: dict) -> str:
    rows = [(k, f"{v:.6g}" if isinstance(v, float) else v) for k, v in metrics.items()]
    return _kv_table(rows) if rows else "<i>no scalar metrics</i>"


def _header(result, payload: dict) -> pn.pane.HTML:
    prov = payload.get("provenance", {})
    state = "ok" if result.status == "ok" else "failed"
    title = (f"<h1>SpectraMind audit: planet {html.escape(str(prov.get('planet', {}).get('planet_id', '?')))}"
             f" <span class='audit-{state}'>{state.upper()}</span></h1>")
    verdict = (f"<p>{payload['n_gates'] - payload['n_failed_gates']} of {payload['n_gates']} QC gates passed"
               f" (every gate is an error in an audit).</p>")
    if result.message:
        verdict += f"<p class='audit-failed'><b>Stopped:</b> {html.escape(result.message)}</p>"
    rows = [("config hash", payload["config_hash"]), ("profile", prov.get("profile")),
            ("git commit", prov.get("git_commit")), ("run dir", str(result.run_dir)),
            ("created (UTC)", prov.get("created_utc"))]
    rows += [(f"version {k}", v) for k, v in prov.get("versions", {}).items()]
    rows += [(f"sha256 {k}", v) for k, v in prov.get("input_checksums", {}).items()]
    return pn.pane.HTML(title + verdict + "<h3>Provenance</h3>" + _kv_table(rows), sizing_mode="stretch_width")


def _stage_section(result, record) -> list[Any]:
    where = record.instrument or "planet"
    badges = " ".join(gate_badge(g) for g in record.gates) or "<i>no gates</i>"
    head = (f"<h2>Stage {html.escape(record.stage)} ({html.escape(where)})</h2>"
            f"<p>status: <b>{record.status}</b> ({record.seconds:.2f} s) {html.escape(record.reason)}</p>"
            f"<p>{badges}</p>")
    scalars = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float, str, bool))}
    items: list[Any] = [pn.pane.HTML(head, sizing_mode="stretch_width")]
    if record.status in ("ran", "cached"):
        plots = [render(p) for p in result.diagnostics(record.stage, record.instrument)]
        if plots:
            items.append(pn.GridBox(*plots, ncols=2, sizing_mode="stretch_width"))
    items.append(pn.pane.HTML("<details><summary>metrics</summary>" + _metrics_table(scalars) + "</details>",
                              sizing_mode="stretch_width"))
    return items


def write_report(result, payload: dict, path: str | os.PathLike) -> Path:
    """Write the audit page to ``path`` (atomically) and return it."""
    path = Path(path)
    sections: list[Any] = [_header(result, payload)]
    for record in result.records:
        sections.extend(_stage_section(result, record))
    page = pn.Column(*sections, sizing_mode="stretch_width", stylesheets=[_REPORT_CSS])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.html")
    try:
        page.save(str(tmp), resources=INLINE, title="SpectraMind audit")
        tmp.write_text(_EXTERNAL.sub("", tmp.read_text()))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
