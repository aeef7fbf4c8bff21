"""The strict audit: every QC gate is an error, and a report a scientist can sign off.

``run_audit(cfg)`` runs the chain with all gates forced to ``action_on_fail:
error`` (the run stops at the first failing gate, whose output is not
committed), then writes into the run directory

* ``audit.json``: status, every stage's metrics and gates per instrument, the
  provenance of ``run_hash_summary.json`` (config hash, input checksums,
  versions, git commit) and, when the planet has labels, the transit spectrum
  against the truth;
The HTML page of the same content (``spectramind audit`` writes ``audit.html``)
is rendered by the diagnostics app (:mod:`spectramind_app.report`), which owns
the plotting; the engine returns the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from .chain import RunResult, run_chain
from .store import atomic_write_json

__all__ = ["run_audit", "audit_payload"]


def _scalars(metrics: dict) -> dict:
    """Metrics that fit a table (numbers, strings, booleans); arrays are in the plots."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _spectrum(result: RunResult) -> dict | None:
    out = result.output("top_level_calib") or result.output("depths")
    depths = result.output("depths")
    if depths is None:
        return None
    labels = result.planet.labels() if result.planet is not None else None
    spec: dict[str, Any] = {
        "wavelength_um": np.asarray(depths.fields["wavelength_um"]).tolist(),
        "mu": np.asarray(out.fields["mu"]).tolist(),
        "sigma": np.asarray(out.fields["sigma"]).tolist(),
    }
    if labels is not None:
        z = (np.asarray(out.fields["mu"]) - labels) / np.asarray(out.fields["sigma"])
        spec.update(truth=np.asarray(labels).tolist(), z_mean=float(np.mean(z)), z_std=float(np.std(z)),
                    coverage_68=float(np.mean(np.abs(z) < 1.0)))
    return spec


def audit_payload(result: RunResult) -> dict:
    """The JSON content of the audit (also used by the HTML report)."""
    summary_path = result.run_dir / "run_hash_summary.json"
    provenance = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    stages: dict[str, dict] = {}
    for r in result.records:
        stages.setdefault(r.stage, {})[r.instrument or "planet"] = {
            "status": r.status, "seconds": r.seconds, "reason": r.reason,
            "gates": [g.to_json() for g in r.gates], "metrics": _scalars(r.metrics),
        }
    n_gates = sum(len(r.gates) for r in result.records)
    n_failed = sum(1 for r in result.records for g in r.gates if not g.passed)
    return {
        "status": result.status, "message": result.message, "config_hash": result.config_hash,
        "n_gates": n_gates, "n_failed_gates": n_failed, "stages": stages,
        "spectrum": _spectrum(result) if result.status == "ok" else None,
        "provenance": provenance,
    }


def run_audit(cfg: DictConfig, run_dir: str | Path | None = None) -> tuple[RunResult, dict]:
    """Run ``cfg`` with every gate as an error; write ``audit.json``.

    Returns the run result (``status`` "failed" when a gate failed: the payload
    says which) and the audit payload written to ``audit.json``.
    """
    result = run_chain(cfg, run_dir=run_dir, force_error_gates=True, raise_on_failure=False)
    payload = audit_payload(result)
    atomic_write_json(result.run_dir / "audit.json", payload)
    return result, payload
