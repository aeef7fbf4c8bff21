"""Lean by default: the nominal and fast profiles keep no detector frame plane, with the stored chain's results.

ADC -> dark -> flat stream in memory into CDS; CDS (and the fast profile's
ADC) keep their planes in ``run_dir/.scratch`` only until photometry has read
them, then :func:`calib_core.store.release_frames` leaves one preview frame.
The numbers must be exactly those of the chain that stores every plane (the
strict layout), every stage keeps its diagnostics, and the cache still works:
a rerun reuses everything, a rerun of photometry recomputes the released
detector chain first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.config.compose import validate_config
from calib_core.store import load_output, release_frames, verify_output

DETECTOR = ("adc", "dark", "flat", "cds")
STORED = [f"calib.{s}.cache.write_intermediate=true" for s in DETECTOR]
PLANES = {"data.npy", "var.npy", "dq.npy"}


def _run(root, run_dir, *overrides, profile="calib/nominal"):
    return run_chain(compose_config(profile, [f"data.root={root}", f"run_dir={run_dir}", *overrides]))


def _planes(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.npy") if p.name in PLANES)


def _metrics(rec):
    return json.loads(json.dumps(rec.metrics, default=lambda o: np.asarray(o).tolist()))


@pytest.fixture(scope="module")
def lean_and_stored(demo_root, tmp_path_factory):
    lean = _run(demo_root, tmp_path_factory.mktemp("lean"))
    stored = _run(demo_root, tmp_path_factory.mktemp("stored"), *STORED)
    return lean, stored


def test_profiles_store_planes_only_in_strict():
    for profile, stored in (("fast", False), ("nominal", False), ("strict", True)):
        vc = validate_config(compose_config(f"calib/{profile}", []))
        for stage in DETECTOR:
            if stage in vc.stages:
                assert vc.stages[stage].cache.write_intermediate is stored, (profile, stage)


def test_nominal_keeps_no_frame_plane_and_computes_what_the_stored_chain_computes(lean_and_stored):
    lean, stored = lean_and_stored
    assert lean.status == stored.status == "ok"
    assert _planes(lean.run_dir) == []
    assert len(_planes(stored.run_dir)) == 3 * len(DETECTOR) * 2          # every plane of both instruments
    for inst in ("FGS1", "AIRS-CH0"):
        for stage in ("photometry", "trace", "phase"):
            a, b = lean.output(stage, inst), stored.output(stage, inst)
            assert set(a.fields) == set(b.fields)
            for name in a.fields:
                np.testing.assert_array_equal(np.asarray(a.fields[name]), np.asarray(b.fields[name]),
                                              err_msg=f"{stage}/{inst}/{name}")
        for stage in (*DETECTOR, "photometry"):
            assert _metrics(lean.record(stage, inst)) == _metrics(stored.record(stage, inst)), (stage, inst)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(np.asarray(lean.output("depths").fields[name]),
                                      np.asarray(stored.output("depths").fields[name]))
    assert (lean.run_dir / "depths.csv").read_text() == (stored.run_dir / "depths.csv").read_text()


@pytest.mark.parametrize("inst", ["FGS1", "AIRS-CH0"])
def test_released_cds_keeps_its_small_fields_a_preview_and_every_diagnostic(lean_and_stored, inst):
    lean, stored = lean_and_stored
    cds = lean.output("cds", inst)
    assert cds.meta["planes_released"] is True and verify_output(cds.path) is None
    assert not PLANES & {f"{f}.npy" for f in cds.fields}
    index = cds.meta["preview_index"]
    np.testing.assert_array_equal(cds.fields["preview"][0], stored.output("cds", inst).fields["data"][index])
    for name in ("frame_flux", "pair_index", "cosmic_ray_count", "robust_scale"):
        np.testing.assert_array_equal(np.asarray(cds.fields[name]), np.asarray(stored.output("cds", inst).fields[name]))
    for stage in (*DETECTOR, "photometry", "trace", "phase"):
        plots, reference = lean.diagnostics(stage, inst), stored.diagnostics(stage, inst)
        assert plots and [p.kind for p in plots] == [p.kind for p in reference], stage
    frame = [p for p in lean.diagnostics("cds", inst) if p.kind == "image" and "CDS electrons" in p.title]
    assert frame and "frame planes not stored" in frame[0].title
    np.testing.assert_array_equal(frame[0].data, cds.fields["preview"][0])


def test_rerun_reuses_everything_and_photometry_rerun_recomputes_the_released_chain(demo_root, tmp_path):
    args = ["data.instruments=[FGS1]", "calib.trace.enabled=false", "calib.phase.enabled=false",
            "calib.depths.enabled=false", "calib.top_level_calib.enabled=false"]
    first = _run(demo_root, tmp_path, *args)
    again = _run(demo_root, tmp_path, *args)
    assert [r.status for r in again.records] == ["cached"] * 5
    changed = _run(demo_root, tmp_path, *args, "calib.photometry.aperture.radius_px=6")
    assert [r.status for r in changed.records] == ["ran"] * 5       # CDS planes were released: recomputed
    np.testing.assert_array_equal(np.asarray(changed.output("cds", "FGS1").fields["frame_flux"]),
                                  np.asarray(first.output("cds", "FGS1").fields["frame_flux"]))
    assert _planes(tmp_path) == []
    forced = _run(demo_root, tmp_path, *args, "calib.photometry.aperture.radius_px=6", "runtime.from_stage=photometry")
    assert [r.status for r in forced.records] == ["ran"] * 5
    np.testing.assert_array_equal(np.asarray(forced.output("photometry", "FGS1").fields["photometry_flux"]),
                                  np.asarray(changed.output("photometry", "FGS1").fields["photometry_flux"]))


def test_a_released_output_with_an_edited_preview_is_recomputed_not_used(demo_root, tmp_path):
    args = ["data.instruments=[FGS1]", "calib.trace.enabled=false", "calib.phase.enabled=false",
            "calib.depths.enabled=false", "calib.top_level_calib.enabled=false"]
    first = _run(demo_root, tmp_path, *args)
    cds_dir = first.output("cds", "FGS1").path
    preview = np.load(cds_dir / "preview.npy")
    np.save(cds_dir / "preview.npy", preview + 1)                 # edited after the run
    assert "preview.npy" in verify_output(cds_dir)
    again = _run(demo_root, tmp_path, *args)
    rec = again.record("cds", "FGS1")
    assert rec.status == "ran" and "preview.npy" in rec.reason
    assert verify_output(cds_dir) is None and again.output("cds", "FGS1").meta["planes_released"] is True


def test_release_frames_without_an_output_or_planes(tmp_path, demo_root):
    assert release_frames(tmp_path / "nothing", 0) is None
    run = _run(demo_root, tmp_path / "run", "data.instruments=[FGS1]", "calib.trace.enabled=false",
               "calib.phase.enabled=false", "calib.depths.enabled=false", "calib.top_level_calib.enabled=false")
    out = run.output("cds", "FGS1")
    again = release_frames(out.path, 10**9)             # already released: unchanged
    assert again.meta == out.meta and verify_output(out.path) is None


def test_fast_profile_releases_the_adc_planes_with_identical_photometry(demo_root, tmp_path):
    args = ["calib.trace.enabled=false", "calib.phase.enabled=false", "calib.depths.enabled=false",
            "calib.top_level_calib.enabled=false"]
    lean = _run(demo_root, tmp_path / "lean", *args, profile="calib/fast")
    stored = _run(demo_root, tmp_path / "stored", *args, "calib.adc.cache.write_intermediate=true",
                  profile="calib/fast")
    assert _planes(lean.run_dir) == [] and _planes(stored.run_dir)
    for inst in ("FGS1", "AIRS-CH0"):
        np.testing.assert_array_equal(np.asarray(lean.output("photometry", inst).fields["photometry_flux"]),
                                      np.asarray(stored.output("photometry", inst).fields["photometry_flux"]))
        assert lean.output("adc", inst).meta["planes_released"] is True
        assert lean.diagnostics("adc", inst)


def test_app_tabs_populate_under_nominal_and_offer_the_planes_switch(demo_root, tmp_path):
    from spectramind_app.state import AppState
    from spectramind_app.widgets import field_specs

    from calib_core.stages import stage_schema

    for stage in DETECTOR:
        assert "cache.write_intermediate" in [s.key for s in field_specs(stage_schema(stage))]
    state = AppState(data_root=demo_root, work_dir=tmp_path)
    try:
        assert state.value("calib.cds.cache.write_intermediate") is False
        assert state.run() is not None
        assert _planes(state.run_dir) == []
        for inst in ("FGS1", "AIRS-CH0"):
            state.instrument = inst
            shown = [s for s in state.enabled if s != "top_level_calib" and state.record(s) is not None and state.record(s).status in ("ran", "cached")]
            assert set(shown) >= {*DETECTOR, "photometry", "trace", "phase", "depths"}   # sigma calibration: off
            for stage in shown:
                assert state.diagnostics(stage), (stage, inst)
    finally:
        state.close()
