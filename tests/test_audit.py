"""The strict audit: every gate an error, a self-contained HTML report, a JSON of metrics + provenance."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from calib_core.cli import main
from calib_core.io import open_planet
from calib_core.sim import ensure_demo


@pytest.mark.slow
def test_strict_audit_on_the_demo_planet_passes_and_reports(tmp_path, capsys):
    root = ensure_demo(seed=0)
    code = main(["audit", "--config-name", "calib/strict", f"data.root={root}", f"run_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0, out
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["status"] == "ok" and audit["n_failed_gates"] == 0 and audit["n_gates"] > 40
    assert all(g["action"] == "error" for s in audit["stages"].values() for r in s.values() for g in r["gates"])
    assert len(audit["provenance"]["input_checksums"]) >= 12
    assert audit["provenance"]["config_hash"] == audit["config_hash"]
    spectrum = audit["spectrum"]
    truth = open_planet(root).labels()
    np.testing.assert_allclose(spectrum["truth"], truth)
    assert 0.7 < spectrum["z_std"] < 1.5
    page = (tmp_path / "audit.html").read_text()
    # self-contained: no external scripts or stylesheets, Bokeh inlined
    assert not re.search(r'<script[^>]*src="https?://', page)
    assert not re.search(r'<link[^>]*href="https?://', page)
    assert "Bokeh" in page
    for stage in ("adc", "dark", "flat", "cds", "photometry", "trace", "phase", "depths"):
        assert f"Stage {stage} (" in page
    assert "Transmission spectrum" in page


def test_audit_stops_at_the_first_failing_gate_and_says_so(demo_root, tmp_path):
    # 48 read pairs cannot fill strict's 400 phase bins: at the latest the phase coverage gate stops the audit
    code = main(["audit", "--config-name", "calib/strict", f"data.root={demo_root}", f"run_dir={tmp_path}",
                 "data.instruments=[FGS1]"])
    assert code == 1
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["status"] == "failed"
    failed = [(stage, gate["name"]) for stage, per in audit["stages"].items() for rec in per.values()
              if rec["status"] == "failed" for gate in rec["gates"] if not gate["passed"]]
    assert len({stage for stage, _ in failed}) == 1
    stage, gate = failed[0]
    assert f"'{gate}' of stage '{stage}'" in audit["message"]
    order = list(audit["stages"])
    assert order[-1] == stage                                       # nothing ran after it
    assert not (tmp_path / "calib" / stage / "FGS1").exists()       # the failing stage left nothing
    assert (tmp_path / "calib" / order[-2] / "FGS1" / "meta.json").is_file()
    page = (tmp_path / "audit.html").read_text()
    assert "FAILED" in page and gate in page
