"""The chain runner: outputs contract, caching, QC gates, provenance and failure safety."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest

from calib_core import provenance
from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.store import load_output
from calib_core.stages import QCError, get_stage


def _cfg(demo_root, run_dir, *overrides, profile="calib/nominal"):
    return compose_config(profile, [f"data.root={demo_root}", f"run_dir={run_dir}", *overrides])


#: keep every detector stage's frame planes in calib/ (the nominal profile does not: see test_lean_default.py)
STORED = [f"calib.{s}.cache.write_intermediate=true" for s in ("adc", "dark", "flat", "cds")]


@pytest.fixture(scope="module")
def nominal_run(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nominal")
    return run_chain(_cfg(demo_root, run_dir, "data.instruments=[AIRS-CH0]", *STORED))


def test_run_dir_contract(nominal_run):
    rd = nominal_run.run_dir
    assert nominal_run.status == "ok"
    for name in ("config.yaml", "run_hash_summary.json", "qc.json", "debug_log.md"):
        assert (rd / name).is_file(), name
    for stage in ("adc", "dark", "flat", "cds"):
        out = rd / "calib" / stage / "AIRS-CH0"
        for field in ("data.npy", "dq.npy", "var.npy", "frame_time_s.npy", "meta.json"):
            assert (out / field).is_file(), out / field
        meta = json.loads((out / "meta.json").read_text())
        n = meta["fields"]["data"]["shape"][0]
        assert meta["fields"]["frame_time_s"]["shape"] == [n]
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
            "calib.phase.enabled=false", "calib.depths.enabled=false", "calib.top_level_calib.enabled=false", *STORED]
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
    # ...but cached outputs are judged by the current thresholds, not the stored verdicts
    stricter = run_chain(_cfg(demo_root, tmp_path, *base, "calib.flat.min_flat=0.2",
                              "calib.flat.quality_checks.max_zero_frac=-1.0"))
    flat = stricter.record("flat", "AIRS-CH0")
    assert flat.status == "cached"
    assert [g.passed for g in flat.gates if g.name == "flat_zero_fraction"] == [False]
    forced = run_chain(_cfg(demo_root, tmp_path, *base, "calib.flat.min_flat=0.2", "runtime.from_stage=dark"))
    assert {r.stage: r.status for r in forced.records} == {"adc": "cached", "dark": "ran", "flat": "ran",
                                                          "cds": "ran"}


def test_error_gate_stops_the_run_and_commits_nothing_half_done(demo_root, tmp_path):
    base = ["data.instruments=[AIRS-CH0]", "calib.photometry.enabled=false", "calib.trace.enabled=false",
            "calib.phase.enabled=false", "calib.depths.enabled=false", "calib.top_level_calib.enabled=false", *STORED]
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


RECIPE_STAGE = [
    (["calib.cds.pairing.order_by=timestamp", "calib.cds.pairing.policy=nearest", "calib.cds.pairing.window_s=3.0"],
     "cds"),
    (["calib.photometry.photometry.method=psf", "calib.photometry.psf.model=gaussian_moffat"], "photometry"),
    (["calib.trace.along_wavelength.method=spline", "calib.trace.along_wavelength.spline.knots=12"], "trace"),
    (["calib.top_level_calib.method=temperature", "calib.top_level_calib.temperature.per_bin=true"],
     "top_level_calib"),
]


FIELDS = {"cds": ("AIRS-CH0", "pair_index"), "photometry": ("AIRS-CH0", "photometry_flux"),
          "trace": ("AIRS-CH0", "trace_continuum"), "top_level_calib": (None, "sigma"),
          "trace_norm": ("AIRS-CH0", "trace_flux_norm")}


@pytest.fixture(scope="module")
def recipe_base(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recipes") / "base"
    base = run_chain(_cfg(demo_root, run_dir, *STORED))      # stored planes: a recipe reruns only its stage
    arrays = {stage: np.array(base.output(stage.split("_norm")[0], inst).fields[field])
              for stage, (inst, field) in FIELDS.items()}
    return run_dir, base.config_hash, arrays


@pytest.mark.slow
@pytest.mark.parametrize("overrides, stage", RECIPE_STAGE)
def test_every_seed_recipe_changes_the_run(recipe_base, demo_root, tmp_path, overrides, stage):
    base_dir, base_hash, base_arrays = recipe_base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)          # same cache, separate outputs
    result = run_chain(_cfg(demo_root, run_dir, *STORED, *overrides))
    status = {(r.stage, r.instrument): r.status for r in result.records}
    order = ["adc", "dark", "flat", "cds", "photometry", "trace", "phase", "depths", "top_level_calib"]
    upstream = order[:order.index(stage)]
    assert all(s == "cached" for (name, _), s in status.items() if name in upstream), status
    assert all(s == "ran" for (name, _), s in status.items() if name == stage), status
    assert result.config_hash != base_hash
    inst, field = FIELDS[stage]
    new = np.asarray(result.output(stage, inst).fields[field])
    if stage == "cds":
        # regular time stamps: nearest-in-window pairing must find exactly the index pairs
        np.testing.assert_array_equal(new, base_arrays[stage])
    else:
        assert not np.allclose(new, base_arrays[stage], equal_nan=True)
    if stage == "trace":
        # the continuum model changes the continuum, never the normalised light curves: each channel's
        # out-of-transit baseline absorbs what a smooth continuum leaves, so depths cannot depend on it
        norm = np.asarray(result.output("trace", "AIRS-CH0").fields["trace_flux_norm"])
        np.testing.assert_allclose(norm, base_arrays["trace_norm"], rtol=1e-9, equal_nan=True)


def test_code_hash_covers_the_kernels_and_shared_helpers_a_stage_uses(monkeypatch):
    """Editing a kernel or a shared helper (not only the stage's own module) must invalidate cached outputs."""
    adc = get_stage("adc")
    used = provenance.code_modules(type(adc).__module__)
    assert {"calib_core.stages.adc.step", "calib_core.stages.adc.convert", "calib_core.stages.pixels",
            "calib_core.dq"} <= set(used)
    before = provenance.code_hash(adc)
    real = inspect.getsource

    def edited(obj):
        text = real(obj)
        return text + "\n# edited\n" if getattr(obj, "__name__", "") == "calib_core.stages.pixels" else text

    monkeypatch.setattr(provenance.inspect, "getsource", edited)
    assert provenance.code_hash(adc) != before
    # a module the stage does not use leaves its key alone
    assert "calib_core.stages.photometry.step" not in used
