"""The chain runner: outputs contract, caching, QC gates, provenance and failure safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.frames import load_output
from calib_core.stages import QCError


def _cfg(demo_root, run_dir, *overrides, profile="calib/nominal"):
    return compose_config(profile, [f"data.root={demo_root}", f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def nominal_run(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nominal")
    return run_chain(_cfg(demo_root, run_dir, "data.instruments=[AIRS-CH0]"))


def test_run_dir_contract(nominal_run):
    rd = nominal_run.run_dir
    assert nominal_run.status == "ok"
    for name in ("config.yaml", "run_hash_summary.json", "qc.json", "debug_log.md"):
        assert (rd / name).is_file(), name
    for stage in ("adc", "dark", "flat", "cds"):
        out = rd / "calib" / stage / "AIRS-CH0"
        for field in ("data.npy", "dq.npy", "var.npy", "meta.json"):
            assert (out / field).is_file(), out / field
        meta = json.loads((out / "meta.json").read_text())
        n = meta["fields"]["data"]["shape"][0]
        assert len(meta["frame_time_s"]) == n
        assert meta["fields"]["data"]["dtype"] == "float32"
        assert "wavelength_um" in meta
    cds = load_output(rd / "calib" / "cds" / "AIRS-CH0")
    raw_frames = load_output(rd / "calib" / "adc" / "AIRS-CH0").fields["data"].shape[0]
    assert cds.fields["data"].shape[0] == raw_frames // 2
    summary = json.loads((rd / "run_hash_summary.json").read_text())
    assert summary["config_hash"] == nominal_run.config_hash
    assert any(k.startswith("AIRS-CH0/") for k in summary["input_checksums"])
    assert summary["versions"]["numpy"] == np.__version__
    assert "git_commit" in summary
    qc = json.loads((rd / "qc.json").read_text())
    assert set(qc["stages"]) >= {"adc", "dark", "flat", "cds"}
    line = (rd / "debug_log.md").read_text().splitlines()[-1]
    assert "status=ok" in line and nominal_run.config_hash[:12] in line


def test_rerun_hits_cache_and_upstream_change_invalidates_downstream_only(demo_root, tmp_path):
    base = ["data.instruments=[AIRS-CH0]", "calib.photometry.enabled=false", "calib.trace.enabled=false",
            "calib.phase.enabled=false", "calib.depths.enabled=false", "calib.top_level_calib.enabled=false"]
    first = run_chain(_cfg(demo_root, tmp_path, *base))
    assert {r.status for r in first.records} == {"ran"}
    again = run_chain(_cfg(demo_root, tmp_path, *base))
    assert {r.stage: r.status for r in again.records} == {s: "cached" for s in ("adc", "dark", "flat", "cds")}
    changed = run_chain(_cfg(demo_root, tmp_path, *base, "calib.flat.min_flat=0.2"))
    status = {r.stage: r.status for r in changed.records}
    assert status == {"adc": "cached", "dark": "cached", "flat": "ran", "cds": "ran"}
    # a QC threshold or cache policy never changes results: still cached
    qc_only = run_chain(_cfg(demo_root, tmp_path, *base, "calib.flat.min_flat=0.2",
                             "calib.cds.quality_checks.action_on_fail=error"))
    assert {r.status for r in qc_only.records} == {"cached"}
    forced = run_chain(_cfg(demo_root, tmp_path, *base, "calib.flat.min_flat=0.2", "runtime.from_stage=dark"))
    assert {r.stage: r.status for r in forced.records} == {"adc": "cached", "dark": "ran", "flat": "ran",
                                                          "cds": "ran"}


def test_error_gate_stops_the_run_and_commits_nothing_half_done(demo_root, tmp_path):
    base = ["data.instruments=[AIRS-CH0]", "calib.photometry.enabled=false", "calib.trace.enabled=false",
            "calib.phase.enabled=false", "calib.depths.enabled=false", "calib.top_level_calib.enabled=false"]
    ok = run_chain(_cfg(demo_root, tmp_path, *base))
    cds_dir = ok.run_dir / "calib" / "cds" / "AIRS-CH0"
    before = (cds_dir / "meta.json").read_text()
    bad = [*base, "calib.dark.hot_pixels.sigma=4.0", "calib.flat.quality_checks.action_on_fail=error",
           "calib.flat.quality_checks.max_zero_frac=-1.0"]
    with pytest.raises(Exception) as err:
        run_chain(_cfg(demo_root, tmp_path, *bad))
    assert "max_zero_frac" in str(err.value) or isinstance(err.value, (QCError, ValueError))
    qc = json.loads((tmp_path / "qc.json").read_text())
    assert qc["status"] == "failed"
    # the old, complete CDS output was not replaced by anything half-written
    assert (cds_dir / "meta.json").read_text() == before
    assert not list((tmp_path / "calib").rglob("*.tmp"))
