"""Multi-planet batches on a Dask LocalCluster: per-planet runs, failure isolation, submission CSV."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from calib_core.cli import main
from calib_core.io import open_planet
from calib_core.io.demo import make_demo


def _append_rows(dst, src):
    with open(src) as fh:
        rows = list(csv.reader(fh))[1:]
    with open(dst, "a", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture(scope="module")
def three_planet_root(tmp_path_factory):
    """Two good demo planets and one with a corrupt signal file, in one dataset root."""
    base = tmp_path_factory.mktemp("batch")
    root = make_demo(base / "data", seed=5, n_pairs=48, planet_id=2000001)
    for seed, pid in ((6, 2000002), (7, 2000003)):
        other = make_demo(base / f"data{seed}", seed=seed, n_pairs=48, planet_id=pid)
        shutil.copytree(other / "train" / str(pid), root / "train" / str(pid))
        _append_rows(root / "train.csv", other / "train.csv")
        _append_rows(root / "train_star_info.csv", other / "train_star_info.csv")
    bad = root / "train" / "2000003" / "AIRS-CH0_signal_0.parquet"
    bad.write_bytes(bad.read_bytes()[:1000])
    return root


@pytest.mark.slow
def test_batch_runs_planets_in_parallel_and_isolates_failures(three_planet_root, tmp_path, capsys):
    out = tmp_path / "batch"
    code = main(["batch", "--config-name", "calib/fast", "--out", str(out), "--workers", "2",
                 f"data.root={three_planet_root}"])
    assert code == 1                                   # one planet failed
    summary = json.loads((out / "batch_summary.json").read_text())
    status = {p["planet_id"]: p for p in summary["planets"]}
    assert status[2000001]["status"] == status[2000002]["status"] == "ok"
    assert status[2000003]["status"] == "failed"
    assert "AIRS-CH0_signal_0.parquet" in status[2000003]["message"]
    # the submission holds the two good planets, each row equal to its own run's depths.csv
    with open(out / "submission.csv") as fh:
        rows = list(csv.reader(fh))
    assert len(rows[0]) == 1 + 2 * 283 and rows[0][1] == "wl_1" and rows[0][284] == "sigma_1"
    assert sorted(int(r[0]) for r in rows[1:]) == [2000001, 2000002]
    for row in rows[1:]:
        own = list(csv.reader(open(out / row[0] / "depths.csv")))[1]
        assert row == own
        mu = np.array(row[1:284], float)
        truth = open_planet(three_planet_root, int(row[0])).labels()
        assert abs(np.median(mu) - np.median(truth)) < 0.2 * np.median(truth)
    assert "2/3 planets ok" in capsys.readouterr().out
