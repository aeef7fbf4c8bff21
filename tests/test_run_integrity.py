"""Issue 11: a failed or interrupted run never looks successful, two writers never mix, an edited cache is
never used, and degenerate data gets a named cause from the stage that found it.

Runs go through the real ``spectramind`` command line (a subprocess where a signal or a second process is
part of the case) on private copies of small demo planets.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib_core.chain import run_chain
from calib_core.cli import main
from calib_core.config import compose_config, config_hash
from calib_core.sim import DEMO_PLANET_ID, load_truth, make_demo
from calib_core.rundir import run_status

PID = DEMO_PLANET_ID
BARE = ("Traceback", "LinAlgError", "IndexError", "TypeError", "ZeroDivisionError", "KeyError", "ValueError",
        "Singular matrix", "are most frames flagged")
RECORD_FILES = ("run_state.json", "qc.json", "run_hash_summary.json")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "calib_core.cli", *args]


def _statuses(run: Path) -> dict[str, str]:
    out = {name: json.loads((run / name).read_text())["status"] for name in RECORD_FILES}
    out["debug_log.md"] = (run / "debug_log.md").read_text().splitlines()[-1].split("status=")[1].split(" ")[0]
    return out


def _fast(root: Path, run: Path, *overrides: str):
    return compose_config("calib/fast", [f"data.root={root}", f"run_dir={run}", *overrides])


# ---------------------------------------------------------------------------
# failed re-runs and the readers of run directories
# ---------------------------------------------------------------------------


def _submission(path: Path, pid: int, mu: np.ndarray, sigma: np.ndarray) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["planet_id", *[f"wl_{i + 1}" for i in range(283)], *[f"sigma_{i + 1}" for i in range(283)]])
        w.writerow([pid, *mu, *sigma])


def test_failed_rerun_leaves_no_depths_and_readers_skip_runs_that_are_not_ok(demo_root, tmp_path, capsys):
    run = tmp_path / "runs" / str(PID)
    ok = run_chain(_fast(demo_root, run))
    assert ok.status == "ok" and (run / "depths.csv").is_file()
    # the same run directory, a config whose trace cannot run: the previous depths.csv must not survive
    code = main(["calibrate", "--config-name", "calib/fast", f"data.root={demo_root}", f"run_dir={run}",
                 "calib.trace.transit_mask.method=ephemeris"])
    err = capsys.readouterr().err
    assert code == 1 and "trace/FGS1: calib.trace.transit_mask.method = 'ephemeris': needs calib.phase" in err
    assert not (run / "depths.csv").exists()
    assert _statuses(run) == dict.fromkeys([*RECORD_FILES, "debug_log.md"], "failed")
    assert run_status(run) == "failed"
    assert config_hash(compose_config("calib/fast", [f"data.root={demo_root}",
                                                     "calib.trace.transit_mask.method=ephemeris"])) \
        == json.loads((run / "run_state.json").read_text())["config_hash"]

    # sigma-calibrate --preds DIR: a depths.csv left next to a failed or interrupted run is not used
    rng = np.random.default_rng(3)
    ids = list(range(2000001, 2000007))
    y = rng.uniform(0.01, 0.02, (len(ids), 283))
    for k, pid in enumerate(ids):
        d = tmp_path / "runs" / str(pid)
        d.mkdir(parents=True)
        _submission(d / "depths.csv", pid, y[k] + rng.normal(0, 2e-4, 283), np.full(283, 2e-4))
        (d / "run_state.json").write_text(json.dumps({"status": "ok"}))
    stale = {PID: "failed", 2000099: "interrupted"}
    for pid, status in stale.items():
        d = tmp_path / "runs" / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        _submission(d / "depths.csv", pid, np.full(283, 0.5), np.full(283, 1e-4))   # an old run's result
        (d / "run_state.json").write_text(json.dumps({"status": status}))
    with open(tmp_path / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["planet_id", *[f"wl_{i + 1}" for i in range(283)]])
        w.writerows([[pid, *y[k]] for k, pid in enumerate(ids)] + [[p, *np.full(283, 0.01)] for p in stale])
    code = main(["sigma-calibrate", "--preds", str(tmp_path / "runs"), "--targets", str(tmp_path / "train.csv"),
                 "--out", str(tmp_path / "sigma")])
    out, err = capsys.readouterr()
    assert code == 0, err
    for pid, status in stale.items():
        assert f"runs/{pid}/depths.csv: skipped, the run in {tmp_path / 'runs' / str(pid)} ended '{status}'" in out
    metrics = json.loads((tmp_path / "sigma" / "metrics.json").read_text())
    assert metrics["inputs"]["n_planets"] == len(ids)
    with open(tmp_path / "sigma" / "runs_calibrated.csv") as fh:
        assert sorted(int(r[0]) for r in list(csv.reader(fh))[1:]) == ids

    # only runs that are not ok: refused, saying why
    only_bad = tmp_path / "only_bad"
    shutil.copytree(tmp_path / "runs" / str(PID), only_bad / str(PID))
    code = main(["sigma-calibrate", "--preds", str(only_bad), "--targets", str(tmp_path / "train.csv"),
                 "--out", str(tmp_path / "sigma2")])
    err = capsys.readouterr().err
    assert code == 2 and "no depths.csv of a successful run: 1 skipped" in err and "ended 'failed'" in err


# ---------------------------------------------------------------------------
# Ctrl-C, two writers
# ---------------------------------------------------------------------------


def _wait_for(predicate, proc: subprocess.Popen) -> None:
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_ctrl_c_during_a_stage_is_recorded_as_interrupted_and_the_rerun_resumes(demo_root, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("calibrate", "--config-name", "calib/nominal", f"data.root={demo_root}",
                                 f"run_dir={run}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the first stored stage committed (nominal streams ADC..CDS into photometry and stores nothing
    # before it): the run is inside the chain, with AIRS-CH0 still to calibrate
    _wait_for(lambda: (run / "calib" / "photometry" / "FGS1" / "checksums.json").exists(), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "spectramind: interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert _statuses(run) == dict.fromkeys([*RECORD_FILES, "debug_log.md"], "interrupted")
    for name in (*RECORD_FILES, "debug_log.md"):
        text = (run / name).read_text()
        assert "status=ok" not in text and '"status": "ok"' not in text, name
    assert not (run / "depths.csv").exists()
    # the lock and the lean profiles' committed scratch store stay; no half-written (.tmp, .old) file does
    assert not [p for p in run.rglob(".*") if p.name not in (".lock", ".scratch")], "temporary files left behind"
    # the re-run resumes from what was committed and ends ok
    again = run_chain(compose_config("calib/nominal", [f"data.root={demo_root}", f"run_dir={run}"]))
    assert again.status == "ok" and again.record("photometry", "FGS1").status == "cached"
    assert (run / "depths.csv").is_file() and _statuses(run)["run_state.json"] == "ok"


def test_a_second_writer_is_refused_naming_the_holder_and_outputs_never_mix(demo_root, tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen(_cli("calibrate", "--config-name", "calib/nominal", f"data.root={demo_root}",
                                  f"run_dir={run}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: run_status(run) == "running", first)
    code = main(["calibrate", "--config-name", "calib/fast", f"data.root={demo_root}", f"run_dir={run}"])
    err = capsys.readouterr().err
    assert first.poll() is None, "the first run ended before the second one tried"
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"spectramind: error: RunDirBusy: {run}: another run is writing it (pid {first.pid} on ")
    assert "calib/nominal" in line and "Traceback" not in err
    out, err1 = first.communicate()
    assert first.returncode == 0, err1
    # everything in the directory is the first run's
    nominal = config_hash(compose_config("calib/nominal", [f"data.root={demo_root}", f"run_dir={run}"]))
    assert json.loads((run / "run_state.json").read_text())["config_hash"] == nominal
    assert json.loads((run / "run_hash_summary.json").read_text())["config_hash"] == nominal
    assert "profile: nominal" in (run / "config.yaml").read_text()
    assert (run / "depths.csv").is_file() and run_status(run) == "ok"
    assert "profile=fast" not in (run / "debug_log.md").read_text()


# ---------------------------------------------------------------------------
# a cached output edited in place
# ---------------------------------------------------------------------------


def _edit_in_place(path: Path, edit) -> None:
    arr = np.load(path, mmap_mode="r+")
    edit(arr)
    arr.flush()
    del arr


def test_cached_outputs_edited_in_place_are_recomputed_never_used(demo_root, tmp_path):
    run = tmp_path / "run"
    cfg = _fast(demo_root, run)
    first = run_chain(cfg)
    depths = (run / "depths.csv").read_text()
    flux_path = run / "calib" / "photometry" / "AIRS-CH0" / "photometry_flux.npy"
    flux = np.load(flux_path)
    size = flux_path.stat().st_size
    _edit_in_place(flux_path, lambda a: a.__setitem__((slice(10, 12), slice(None)), a[10:12] * 1.01))
    _edit_in_place(run / "calib" / "depths" / "planet" / "mu.npy", lambda a: a.__imul__(2.0))
    assert flux_path.stat().st_size == size and not np.array_equal(np.load(flux_path), flux)
    again = run_chain(cfg)
    rec = again.record("photometry", "AIRS-CH0")
    assert rec.status == "ran" and "photometry_flux.npy: content differs from its checksum" in rec.reason
    assert again.record("depths").status == "ran" and "mu.npy: content differs" in again.record("depths").reason
    assert again.record("photometry", "FGS1").status == "cached"
    assert np.array_equal(np.load(flux_path), flux)              # recomputed: the original numbers again
    assert (run / "depths.csv").read_text() == depths
    assert "content differs from its checksum" in (run / "run.log").read_text()
    assert first.status == again.status == "ok"


# ---------------------------------------------------------------------------
# degenerate data: a named cause from the stage that found it
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def degenerate_src(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("degenerate") / "data", seed=0, n_pairs=48)


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "data"))


def _signal_path(root: Path, inst: str) -> Path:
    return root / "train" / str(PID) / f"{inst}_signal_0.parquet"


def _set_signal(root: Path, inst: str, values) -> None:
    """Rewrite ``inst``'s signal: frame ``i`` gets the constant ``values(i)`` (uint16) in every pixel."""
    path = _signal_path(root, inst)
    table = pq.read_table(path)
    column = np.array([values(i) for i in range(table.num_rows)], np.uint16)
    pq.write_table(pa.table({name: pa.array(column) for name in table.column_names}), path)


def _keep_pairs(root: Path, first: int, count: int) -> None:
    """Keep read pairs ``first .. first+count`` of both instruments, times shifted to start where the visit did."""
    for inst in ("FGS1", "AIRS-CH0"):
        table = pq.read_table(_signal_path(root, inst))
        pq.write_table(table.slice(2 * first, 2 * count), _signal_path(root, inst))
    path = root / "axis_info.parquet"
    table = pq.read_table(path)
    cols = {name: table.column(name).to_numpy().copy() for name in table.column_names}
    for name in ("FGS1-axis0-h", "AIRS-CH0-axis0-h", "AIRS-CH0-integration_time"):
        col = cols[name]
        kept = col[2 * first:2 * (first + count)].copy()
        if name.endswith("-h"):
            kept -= col[2 * first] - col[0]
        col[:] = np.nan
        col[:kept.size] = kept
    pq.write_table(pa.table(cols), path)


def _calibrate_fails(root: Path, tmp_path: Path, expected: str) -> str:
    run = tmp_path / "run"
    proc = subprocess.run(_cli("calibrate", "--config-name", "calib/fast", f"data.root={root}", f"run_dir={run}"),
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("spectramind: error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    for bare in BARE:
        assert bare not in proc.stderr, (bare, proc.stderr)
    assert run_status(run) == "failed" and not (run / "depths.csv").exists()
    return lines[0]


@pytest.mark.parametrize("case, values, expected", [
    ("all-zero", lambda i: 0, "adc/AIRS-CH0: all 96 frames are dropped (every pixel at 0 DN"),
    ("all-saturated", lambda i: 65535, "adc/AIRS-CH0: all 96 frames are saturated (every pixel at or above "
                                       "calib.adc.saturation.level_dn = 65535 DN)"),
    ("dropped-or-saturated", lambda i: 0 if i % 4 < 2 else 65535,
     "adc/AIRS-CH0: all 48 frames that are not dropped (48 are) are saturated"),
], ids=["all-zero", "all-saturated", "dropped-or-saturated"])
def test_an_unusable_instrument_is_named_by_the_adc_stage(degenerate_src, tmp_path, case, values, expected):
    root = _copy(degenerate_src, tmp_path)
    _set_signal(root, "AIRS-CH0", values)
    line = _calibrate_fails(root, tmp_path, expected)
    assert str(_signal_path(root, "AIRS-CH0")) in line


def test_a_visit_whose_frames_end_before_the_transit(degenerate_src, tmp_path):
    root = _copy(degenerate_src, tmp_path)
    truth = load_truth(root, PID)
    pair_h = 7.5 / 48
    n_pairs = int((truth["t0_h"] - truth["t14_h"] / 2) / pair_h) - 1       # every pair ends before ingress
    assert n_pairs * pair_h >= 1.0                                           # still a plausible visit
    _keep_pairs(root, 0, n_pairs)
    line = _calibrate_fails(root, tmp_path, "trace/FGS1: the visit's frames span 0.00 .. ")
    assert "the visit cannot cover the transit with an out-of-transit baseline" in line


def test_a_transit_longer_than_the_visit_leaves_no_baseline(degenerate_src, tmp_path):
    root = _copy(degenerate_src, tmp_path)
    truth = load_truth(root, PID)
    pair_h = 7.5 / 48
    t1, t4 = truth["t0_h"] - truth["t14_h"] / 2, truth["t0_h"] + truth["t14_h"] / 2
    first, last = int(np.ceil(t1 / pair_h)), int(t4 / pair_h)               # every pair inside the transit
    _keep_pairs(root, first, last - first)
    # FGS1's white light (S/N ~3 at this size) takes a noise dip for the transit; AIRS-CH0 sees it whole
    line = _calibrate_fails(root, tmp_path, "trace/AIRS-CH0: no out-of-transit baseline: the transit window ")
    assert "leaves 0 of " in line and "a transit longer than the visit?" in line


def test_a_sparse_visit_whose_outlier_filter_eats_the_transit_names_the_filter_and_its_remedy(tmp_path):
    # 16 read pairs over the whole visit: the trace's running median spans ingress and egress
    root = make_demo(tmp_path / "sparse", seed=0, n_pairs=16)
    run = tmp_path / "run"
    proc = subprocess.run(_cli("calibrate", "--config-name", "calib/nominal", f"data.root={root}", f"run_dir={run}"),
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("spectramind: error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "trace/FGS1: white-light curve has" in lines[0]
    assert "calib.trace.robust.window_frames = 11, calib.trace.robust.sigma = 5.0) rejected" in lines[0]
    for bare in BARE:
        assert bare not in proc.stderr, (bare, proc.stderr)
    # the remedy the message names works
    proc = subprocess.run(_cli("calibrate", "--config-name", "calib/nominal", f"data.root={root}", f"run_dir={run}",
                               "calib.trace.robust.sigma=100"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert run_status(run) == "ok" and (run / "depths.csv").exists()


def test_results_do_not_depend_on_the_callers_blas_threads(demo_root, tmp_path):
    """A Dask worker or a notebook may run BLAS with another thread count: the depths stay byte-identical."""
    from threadpoolctl import threadpool_limits

    runs = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            run_chain(compose_config("calib/nominal", [f"data.root={demo_root}", f"run_dir={tmp_path / str(threads)}"]))
        runs[threads] = (tmp_path / str(threads) / "depths.csv").read_bytes()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("calibrate", "--config-name", "calib/nominal", f"data.root={demo_root}",
                        f"run_dir={tmp_path / 'cli'}"), env=env, capture_output=True, check=True)
    assert runs[1] == runs[2] == (tmp_path / "cli" / "depths.csv").read_bytes()


@pytest.mark.parametrize("profile", ["fast", "nominal"])
def test_an_ephemeris_that_misses_the_visit_is_named_not_a_singular_fit(demo_root, tmp_path, profile):
    """A configured t0 half a period away puts no sample in a transit: depths names the ephemeris."""
    truth = load_truth(demo_root, PID)
    t0 = truth["t0_h"] + 12.0 * truth["period_d"]
    run = tmp_path / profile
    result = run_chain(compose_config(f"calib/{profile}", [f"data.root={demo_root}", f"run_dir={run}",
                                                           f"calib.phase.ephemeris.t0={t0:.4f}"]),
                       raise_on_failure=False)
    assert result.status == "failed" and result.record("phase", "AIRS-CH0").status == "ran"
    msg = result.message
    assert msg.startswith("depths/planet: no usable sample falls in a transit: the ephemeris puts mid-transit at "
                          f"{t0:.6g} h since the visit start (t0 from config"), msg
    assert "check calib.phase.ephemeris.t0, t0_unit and time.start_epoch" in msg
    assert not any(bare in msg for bare in BARE), msg
    assert not (run / "depths.csv").exists()


def test_a_zero_depth_uncertainty_is_refused_naming_the_geometry():
    """A degenerate white-light fit (zero uncertainty on a fitted depth) is an error, never a result."""
    from calib_core.stages.depths.step import _refuse_zero_sigma
    from calib_core.transit import Geometry

    out = {"mu": np.array([0.01, 0.011, np.nan]), "sigma": np.array([1e-4, 0.0, np.nan]),
           "instrument": np.array([0, 1, 1]), "wavelength_um": np.array([0.7, 1.95, 2.0])}
    g = Geometry(-5.9e7, 6.25, 1.5, 29.9)
    with pytest.raises(ValueError, match=r"^1 channel\(s\) got a zero depth uncertainty \(first: AIRS-CH0 at "
                                         r"1\.95 um\): the white-light fit is degenerate \(a/Rs 1\.5, i 29\.9 deg, "
                                         r"t0 -5\.9e\+07 h since the visit start, from config\)"):
        _refuse_zero_sigma(out, ["FGS1", "AIRS-CH0"], g, "config")
    out["sigma"][1] = 2e-4
    _refuse_zero_sigma(out, ["FGS1", "AIRS-CH0"], g, "config")       # NaN (unfitted) is the finite gate's
