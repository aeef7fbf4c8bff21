"""spectramind dvc: dvc.yaml + params.yaml, reproduced by the real `dvc repro` in a temporary git + DVC repository
(no remote, no network: analytics and update checks off)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from calib_core.cli import main
from calib_core.config import compose_config, config_hash
from calib_core.dvc import MARKER
from calib_core.sim import make_demo

BIN = Path(sys.executable).parent
PLANETS = (2100001, 2100002)


@pytest.fixture(scope="module")
def two_planet_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("dvcdata")
    root = make_demo(base / "data", seed=11, n_pairs=48, planet_id=PLANETS[0])
    other = make_demo(base / "data2", seed=12, n_pairs=48, planet_id=PLANETS[1])
    shutil.copytree(other / "train" / str(PLANETS[1]), root / "train" / str(PLANETS[1]))
    for name in ("train.csv", "train_star_info.csv"):
        with open(other / name) as fh:
            rows = list(csv.reader(fh))[1:]
        with open(root / name, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return root


def _env(site_cache):
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "DVC_STUDIO_OFFLINE": "1", "DVC_SITE_CACHE_DIR": str(site_cache), "GIT_CONFIG_NOSYSTEM": "1"}


def _run(args, cwd, check=True):
    proc = subprocess.run(args, cwd=cwd, env=_env(Path(cwd).parent / "dvc-site-cache"), capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def _dvc(*args, cwd, check=True):
    return _run([str(BIN / "dvc"), *args], cwd, check)


@pytest.fixture
def repo(tmp_path):
    """An empty git + DVC repository, analytics off (DVC_NO_ANALYTICS and the repo config), its site cache in
    tmp_path; the update check runs only with `dvc version`, which is never called."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _dvc("init", "-q", cwd=repo)
    _dvc("config", "core.analytics", "false", cwd=repo)
    return repo


def _stage_status(qc_path):
    qc = json.loads(qc_path.read_text())
    return {stage: next(iter(per.values()))["status"] for stage, per in qc["stages"].items()}


@pytest.mark.slow
def test_dvc_repro_twice_then_a_param_change_and_a_data_change(two_planet_root, repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["dvc", "--config-name", "calib/fast", f"data.root={two_planet_root}",
                 "--planets", ",".join(map(str, PLANETS))]) == 0
    assert "2 stages" in capsys.readouterr().out
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    stage = pipeline["stages"][f"planet_{PLANETS[0]}"]
    assert str(two_planet_root / "train" / str(PLANETS[0]) / "AIRS-CH0_signal_0.parquet") in stage["deps"]
    assert str(two_planet_root / "axis_info.parquet") in stage["deps"]
    assert "calib.phase" in stage["params"] and "data" in stage["params"]
    assert stage["outs"] == [f"runs/{PLANETS[0]}/depths.csv"]
    assert stage["metrics"] == [{f"runs/{PLANETS[0]}/qc.json": {"cache": False}}]

    first = _dvc("repro", cwd=repo)
    assert all(f"Running stage 'planet_{p}'" in first.stdout for p in PLANETS)
    for p in PLANETS:
        run = json.loads((repo / "runs" / str(p) / "run_hash_summary.json").read_text())
        assert run["status"] == "ok"
        # params.yaml is the profile: the DVC run has the config hash of `spectramind calibrate --config-name
        # calib/fast data.root=... data.planet_id=...`
        cfg = compose_config("calib/fast", [f"data.root={two_planet_root}", f"data.planet_id={p}"])
        assert run["config_hash"] == config_hash(cfg)
    stamps = {p: (repo / "runs" / str(p) / "depths.csv").stat().st_mtime_ns for p in PLANETS}

    second = _dvc("repro", cwd=repo)
    assert "Running stage" not in second.stdout and "Data and pipelines are up to date." in second.stdout
    assert {p: (repo / "runs" / str(p) / "depths.csv").stat().st_mtime_ns for p in PLANETS} == stamps

    # runtime.chunk_frames never changes results: not a tracked param, nothing to do
    params = repo / "params.yaml"
    text = params.read_text()
    assert text.startswith(MARKER) and text.count("  chunk_frames: 512\n") == 1
    params.write_text(text.replace("  chunk_frames: 512\n", "  chunk_frames: 256\n"))
    assert "Data and pipelines are up to date." in _dvc("status", cwd=repo).stdout

    # one param edited: both planets are out of date (calib.phase); re-running one, the chain inside
    # recomputes only phase and what follows
    text = params.read_text()
    assert text.count("      nbins: 120\n") == 1
    params.write_text(text.replace("      nbins: 120\n", "      nbins: 100\n"))
    status = _dvc("status", cwd=repo).stdout
    assert status.count("modified:           calib.phase") == 2, status
    third = _dvc("repro", f"planet_{PLANETS[0]}", cwd=repo)
    assert f"Running stage 'planet_{PLANETS[0]}'" in third.stdout and f"planet_{PLANETS[1]}" not in third.stdout
    assert _stage_status(repo / "runs" / str(PLANETS[0]) / "qc.json") == {
        "adc": "cached", "photometry": "cached", "trace": "cached", "phase": "ran", "depths": "ran",
        "top_level_calib": "ran"}
    assert "nbins: 100" in (repo / "runs" / str(PLANETS[0]) / "config.yaml").read_text()
    assert (repo / "runs" / str(PLANETS[1]) / "depths.csv").stat().st_mtime_ns == stamps[PLANETS[1]]

    # one planet's calibration file changes: that planet's stage is out of date for it, the other one is not
    dark = two_planet_root / "train" / str(PLANETS[0]) / "AIRS-CH0_calibration_0" / "dark.parquet"
    original = dark.read_bytes()
    table = pq.read_table(dark)
    try:
        pq.write_table(table.set_column(0, table.column_names[0], pa.array(table.column(0).to_numpy() * 1.01)),
                       dark)
        status = _dvc("status", cwd=repo).stdout
    finally:
        dark.write_bytes(original)                  # the module's dataset is shared
    assert f"planet_{PLANETS[0]}" in status and "AIRS-CH0_calibration_0" in status, status
    assert status.count("AIRS-CH0_calibration_0") == 1 and status.count("calib.phase") == 1, status


def test_dvc_checks_its_arguments_and_never_clobbers_a_foreign_pipeline(two_planet_root, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    base = ["dvc", "--config-name", "calib/fast", f"data.root={two_planet_root}"]
    assert main([*base, "--planets", f"{PLANETS[0]},{PLANETS[0]}"]) == 2
    assert capsys.readouterr().err.strip() == f"spectramind dvc: error: argument --planets: duplicate planet ids {PLANETS[0]}"
    assert main([*base, "--planets", "7"]) == 2
    assert "argument --planets: not in" in capsys.readouterr().err
    assert main([*base, f"data.planet_id={PLANETS[0]}", "--planets", str(PLANETS[1])]) == 2
    assert "argument --planets: not allowed with data.planet_id" in capsys.readouterr().err
    assert not (tmp_path / "dvc.yaml").exists()

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")                       # somebody else's pipeline
    assert main([*base, f"data.planet_id={PLANETS[0]}"]) == 1
    assert "was not written by 'spectramind dvc'" in capsys.readouterr().err
    assert (tmp_path / "dvc.yaml").read_text() == "stages: {}\n"
    assert main([*base, f"data.planet_id={PLANETS[0]}", "--force"]) == 0
    assert list(yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]) == [f"planet_{PLANETS[0]}"]
    assert main([*base, "calib.phase.binning.nbins=90"]) == 0               # ours: replaced; all planets
    assert list(yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]) == [f"planet_{p}" for p in PLANETS]
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["calib"]["phase"]["binning"]["nbins"] == 90
