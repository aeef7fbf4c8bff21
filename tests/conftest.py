"""Shared fixtures: small deterministic demo planets with ground truth (generated once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo planet (48 read pairs per instrument) in the Kaggle layout, with truth."""
    from calib_core.sim import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "data", seed=0, n_pairs=48)


# ---------------------------------------------------------------------------
# detector stages (ADC, dark, flat, CDS)
# ---------------------------------------------------------------------------

DETECTOR_STAGES = ("adc", "dark", "flat", "cds")


@pytest.fixture(scope="session")
def detector_demo(tmp_path_factory):
    """Demo planet for the detector-stage tests: 40 read pairs per instrument, 3 pairs dropped."""
    from calib_core.sim import make_demo

    return make_demo(tmp_path_factory.mktemp("detector_demo") / "data", seed=1, n_pairs=40, drop_pairs=3)


@pytest.fixture(scope="session")
def run_stage():
    """``run(name, inp, cfg, planet, instrument, out_dir, configs=None, chunk_frames=16) -> (output, metrics)``.

    Runs one stage like the chain runner (StageContext + StoreWriter, committed) so
    stage tests need no profile; ``configs`` holds the other stages' config sections
    the stage declares reading (``{"adc.conversion": ...}``).  A small
    ``chunk_frames`` exercises chunk boundaries.
    """
    from calib_core.stages import get_stage
    from calib_core.stages.base import StageContext
    from calib_core.store import StoreWriter

    def _run(name, inp, cfg, planet, instrument, out_dir, configs=None, chunk_frames=16):
        stage = get_stage(name)
        ctx = StageContext(planet=planet, instrument=instrument, stage=name, configs=configs or {},
                           chunk_frames=chunk_frames)
        with StoreWriter(out_dir) as writer:
            metrics = stage.run(inp, cfg, ctx, writer)
            output = writer.commit({"stage": name, "instrument": instrument, "metrics": metrics})
        return output, metrics

    return _run


@pytest.fixture(scope="session")
def detector_chain(detector_demo, tmp_path_factory, run_stage):
    """ADC (reference pixels on) -> dark -> flat -> CDS with default configs, both instruments.

    Returns a dict with ``root``, ``planet``, ``cfgs`` (stage name -> config) and
    ``outputs`` / ``metrics`` keyed by ``(stage, instrument)``.
    """
    from calib_core.io import open_planet
    from calib_core.stages import stage_schema
    from calib_core.stages.base import RawInput

    planet = open_planet(detector_demo)
    cfgs = {name: stage_schema(name)() for name in DETECTOR_STAGES}
    cfgs["adc"].reference_pixel.use = True
    out_dir = tmp_path_factory.mktemp("detector_chain")
    outputs, metrics = {}, {}
    for inst in ("AIRS-CH0", "FGS1"):
        inp = RawInput(planet, inst)
        for name in DETECTOR_STAGES:
            out, m = run_stage(name, inp, cfgs[name], planet, inst, out_dir / name / inst,
                               configs={"adc.conversion": cfgs["adc"].conversion})
            outputs[(name, inst)], metrics[(name, inst)] = out, m
            inp = out.frames()
    return {"root": detector_demo, "planet": planet, "cfgs": cfgs, "outputs": outputs, "metrics": metrics}


@pytest.fixture(scope="session")
def two_planet_batch(tmp_path_factory):
    """``(data_root, batch_dir)``: two demo planets and a ``spectramind batch`` run of both (nominal profile)
    whose output directory lies inside the data root (a root the app may open)."""
    from calib_core.batch import run_batch
    from calib_core.sim import make_demo

    root = make_demo(tmp_path_factory.mktemp("two_planets") / "data", seed=0, n_pairs=48, planet_id=3000001)
    make_demo(root, seed=6, n_pairs=48, planet_id=3000002)
    out = root / "batches" / "nominal"
    outcomes = run_batch("calib/nominal", out_dir=out, root=root, split="train", workers=1,
                         dashboard_address=None, progress=False)
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    return root, out


# ---------------------------------------------------------------------------
# scheduling: the longest tests first, so that the two xdist workers end together
# ---------------------------------------------------------------------------

#: files whose tests take the longest (end-to-end runs, app server starts), longest first; the rest keep
#: their order after them.  Only the order changes: every collected test runs.
LONGEST_FIRST = ("test_app_serve.py", "test_key_walk.py", "test_audit.py", "test_batch.py", "test_run_integrity.py",
                 "test_dvc.py", "test_app_investigate.py", "test_profiles.py", "test_app_unit.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: order within a file is kept
