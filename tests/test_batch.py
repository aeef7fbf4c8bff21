"""Multi-planet batches on Dask: a LocalCluster and a real external scheduler with workers (subprocesses on
127.0.0.1), failure isolation, resuming, a killed worker, Ctrl-C, pruning, progress and argument checks."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from calib_core.batch import BatchProgress, PlanetOutcome, check_complete, prune_run_dir
from calib_core.cli import main
from calib_core.io import open_planet
from calib_core.sim import make_demo

GOOD, BAD = (2000001, 2000002), 2000003


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


def _summary(out):
    return json.loads((out / "batch_summary.json").read_text())


def _by_planet(summary):
    return {p["planet_id"]: p for p in summary["planets"]}


def _check_submission(out, root, ids):
    """submission.csv: Kaggle header, one row per good planet ordered by id, each equal to its run's depths.csv."""
    with open(out / "submission.csv") as fh:
        rows = list(csv.reader(fh))
    assert len(rows[0]) == 1 + 2 * 283 and rows[0][1] == "wl_1" and rows[0][284] == "sigma_1"
    assert [int(r[0]) for r in rows[1:]] == sorted(ids)
    for row in rows[1:]:
        own = list(csv.reader(open(out / row[0] / "depths.csv")))[1]
        assert row == own
        mu = np.array(row[1:284], float)
        truth = open_planet(root, int(row[0])).labels()
        assert abs(np.median(mu) - np.median(truth)) < 0.2 * np.median(truth)


@pytest.mark.slow
def test_batch_runs_planets_in_parallel_and_isolates_failures(three_planet_root, tmp_path, capsys):
    out = tmp_path / "batch"
    code = main(["batch", "--config-name", "calib/fast", "--out", str(out), "--workers", "2",
                 "--dashboard-address", "127.0.0.1:0", f"data.root={three_planet_root}"])
    assert code == 1                                   # one planet failed
    summary = _summary(out)
    status = _by_planet(summary)
    assert summary["finished"] is True and summary["n_ok"] == 2 and summary["n_failed"] == 1
    assert status[2000003]["status"] == "failed"
    assert "AIRS-CH0_signal_0.parquet" in status[2000003]["message"]
    _check_submission(out, three_planet_root, GOOD)
    for pid in GOOD:
        p = status[pid]
        run = json.loads((out / str(pid) / "run_hash_summary.json").read_text())
        assert p["status"] == "ok" and p["reused"] is False
        assert p["config_hash"] == run["config_hash"]
        assert p["worker"].startswith("tcp://127.0.0.1:")
        # the worker process's kernel peak RSS, reset when the task started: at least what a Python process
        # holding numpy/pyarrow/dask needs, far below the machine
        assert p["peak_rss_method"] == "vmhwm" and 100 < p["peak_rss_mb"] < 8000
        assert p["seconds"] > 0 and 0 < p["cpu_seconds"]
        # --keep series (default): the ADC frame planes are gone, its metadata and the series outputs stay
        adc = out / str(pid) / "calib" / "adc" / "AIRS-CH0"
        assert (adc / "meta.json").is_file() and not (adc / "data.npy").exists() and not (adc / "dq.npy").exists()
        assert (out / str(pid) / "calib" / "photometry" / "AIRS-CH0" / "photometry_flux.npy").is_file()
        assert p["pruned_bytes"] > 1_000_000
        assert check_complete(out / str(pid), p["config_hash"], pid)[0]      # still complete after pruning
    text = capsys.readouterr().out
    assert "dashboard: http://127.0.0.1:" in text and "2/3 planets ok" in text


# ---------------------------------------------------------------------------
# an external cluster: `dask scheduler` + `dask worker` processes on 127.0.0.1
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _dask_cluster(tmp_path, n_workers=2):
    """A scheduler (with dashboard) and ``n_workers`` single-threaded workers without nanny, all on 127.0.0.1."""
    from dask.distributed import Client

    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    procs: list[subprocess.Popen] = []
    dask = [sys.executable, "-m", "dask"]
    try:
        procs.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
                                      stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not sched_file.is_file():
            assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        workers = {}
        for i in range(n_workers):
            p = subprocess.Popen([*dask, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                  "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                                  "--death-timeout", "60"], stdout=log, stderr=subprocess.STDOUT)
            procs.append(p)
        with Client(scheduler_file=str(sched_file), timeout=30, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=60)
            pids = client.run(os.getpid)                       # worker address -> process id
        for p in procs[1:]:
            workers.update({addr: p for addr, pid in pids.items() if pid == p.pid})
        assert len(workers) == n_workers
        yield sched_file, workers
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)
        log.close()


def _kill_a_busy_worker(sched_file, workers, out, thread):
    """SIGKILL the first worker seen running a planet of ``out`` (started: config.yaml written; not finished:
    no run_hash_summary.json yet); returns ``(its address, those planets)``."""
    from dask.distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            for addr, keys in client.processing().items():
                started = [int(str(k).split("-")[1]) for k in keys if str(k).startswith("planet-")]
                started = [p for p in started if (out / str(p) / "config.yaml").is_file()
                           and not (out / str(p) / "run_hash_summary.json").exists()]
                if started:
                    workers[addr].send_signal(signal.SIGKILL)
                    return addr, started
            time.sleep(0.05)
    return None, []


@pytest.mark.slow
def test_batch_on_an_external_cluster_resumes_and_survives_a_killed_worker(three_planet_root, tmp_path, capsys):
    out = tmp_path / "batch"
    with _dask_cluster(tmp_path) as (sched_file, workers):
        address = json.loads(sched_file.read_text())["address"]
        code = main(["batch", "--config-name", "calib/fast", "--out", str(out), "--scheduler", address,
                     f"data.root={three_planet_root}"])
        first = capsys.readouterr().out
        assert code == 1
        status = _by_planet(_summary(out))
        assert [status[p]["status"] for p in (*GOOD, BAD)] == ["ok", "ok", "failed"]
        assert all(status[p]["worker"] in workers for p in (*GOOD, BAD))
        assert "AIRS-CH0_signal_0.parquet" in status[BAD]["message"]
        _check_submission(out, three_planet_root, GOOD)
        assert f"on scheduler {address}" in first and "dashboard: http://127.0.0.1:" in first
        stamps = {p: (out / str(p) / "depths.csv").stat().st_mtime_ns for p in GOOD}

        # the same command again: the good planets are reused, the bad one is retried
        code = main(["batch", "--config-name", "calib/fast", "--out", str(out), "--scheduler", address,
                     f"data.root={three_planet_root}"])
        assert code == 1
        again = _by_planet(_summary(out))
        for p in GOOD:
            assert again[p]["status"] == "ok" and again[p]["reused"] is True and again[p]["worker"] is None
            assert again[p]["config_hash"] == status[p]["config_hash"]
            assert (out / str(p) / "depths.csv").stat().st_mtime_ns == stamps[p]     # nothing recomputed
        assert again[BAD]["status"] == "failed" and again[BAD]["reused"] is False
        assert again[BAD]["worker"] in workers                                       # it did run again
        _check_submission(out, three_planet_root, GOOD)
        assert "2/3 planets ok (2 reused)" in capsys.readouterr().out

        # a worker killed (SIGKILL) while it runs a planet: Dask reruns that planet on the other worker
        # (this batch reaches the scheduler through its scheduler file)
        out2 = tmp_path / "killed"
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(code=main([
            "batch", "--config-name", "calib/fast", "--out", str(out2), "--scheduler-file", str(sched_file),
            "--planets", ",".join(map(str, GOOD)), f"data.root={three_planet_root}"])))
        thread.start()
        victim, victim_planets = _kill_a_busy_worker(sched_file, workers, out2, thread)
        thread.join(timeout=180)
        assert not thread.is_alive()
    assert victim is not None, "no worker was caught running a planet"
    assert result["code"] == 0
    status = _by_planet(_summary(out2))
    survivor = next(a for a in workers if a != victim)
    assert all(status[p]["status"] == "ok" for p in GOOD)
    for p in victim_planets:
        assert status[p]["worker"] == survivor
    _check_submission(out2, three_planet_root, GOOD)


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished(three_planet_root, tmp_path):
    """SIGINT to the batch's process group (as a terminal's Ctrl-C) after the first planet: exit 130,
    batch_summary.json and submission.csv hold the finished planet, the others are marked interrupted."""
    out = tmp_path / "batch"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "calib_core.cli", "batch", "--config-name", "calib/fast",
                             "--out", str(out), "--workers", "1", "--no-dashboard", f"data.root={three_planet_root}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                if _summary(out)["n_ok"] >= 1:
                    break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, text
    summary = _summary(out)
    status = _by_planet(summary)
    assert summary["interrupted"] is True and summary["finished"] is False
    assert status[2000001]["status"] == "ok"
    assert {status[p]["status"] for p in (2000002, 2000003)} <= {"interrupted", "ok", "failed"}
    assert "interrupted" in {status[p]["status"] for p in (2000002, 2000003)}
    ok = [p for p, s in status.items() if s["status"] == "ok"]
    with open(out / "submission.csv") as fh:
        assert [int(r[0]) for r in list(csv.reader(fh))[1:]] == sorted(ok)
    assert "Traceback" not in text                           # the workers ignore the Ctrl-C; the batch closes them


# ---------------------------------------------------------------------------
# completeness, pruning, progress, arguments (no cluster)
# ---------------------------------------------------------------------------


def _fake_run(run_dir: Path, chash="abc", status="ok", planet_id=7):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("calib: {}\n")
    (run_dir / "depths.csv").write_text(f"planet_id,wl_1\n{planet_id},0.01\n")
    (run_dir / "run_hash_summary.json").write_text(json.dumps(
        {"status": status, "config_hash": chash, "planet": {"planet_id": planet_id}}))
    (run_dir / "run_state.json").write_text(json.dumps({"status": status, "config_hash": chash}))
    return run_dir


def test_check_complete(tmp_path):
    run = _fake_run(tmp_path / "r")
    assert check_complete(run, "abc", 7) == (True, "complete run for config abc")
    assert not check_complete(run, "other", 7)[0]
    assert not check_complete(run, "abc", 8)[0]
    assert not check_complete(_fake_run(tmp_path / "f", status="failed"), "abc", 7)[0]
    run_bad = _fake_run(tmp_path / "g")
    run_bad.joinpath("run_hash_summary.json").write_text("{not json")
    assert "no readable" in check_complete(run_bad, "abc", 7)[1]
    run2 = _fake_run(tmp_path / "m")
    (run2 / "depths.csv").unlink()
    assert check_complete(run2, "abc", 7) == (False, "depths.csv missing")
    # a later run started (its state says running) and never finished: not complete
    run3 = _fake_run(tmp_path / "n")
    (run3 / "run_state.json").write_text(json.dumps({"status": "running", "config_hash": "abc"}))
    complete, reason = check_complete(run3, "abc", 7)
    assert not complete and "'running'" in reason


def _planes(d: Path, names=("data.npy", "var.npy", "dq.npy", "meta.json", "read_var.npy")):
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"x" * 1000)


def test_prune_series_and_depths_stay_inside_the_run_dir(tmp_path):
    outside = tmp_path / "outside"
    _planes(outside / "stage")
    (outside / "keep_me.npy").write_bytes(b"y" * 10)
    run = _fake_run(tmp_path / "run")
    (run / "qc.json").write_text("{}")
    (run / "debug_log.md").write_text("line\n")
    for stage in ("adc", "cds"):
        _planes(run / "calib" / stage / "AIRS-CH0")
    _planes(run / "calib" / "photometry" / "AIRS-CH0", ("photometry_flux.npy", "meta.json"))
    _planes(run / ".scratch" / "flat" / "FGS1")
    (run / "calib" / "dark").symlink_to(outside / "stage", target_is_directory=True)      # a linked stage dir
    (run / "calib" / "cds" / "FGS1").mkdir()
    (run / "calib" / "cds" / "FGS1" / "data.npy").symlink_to(outside / "keep_me.npy")       # a linked plane

    freed = prune_run_dir(run, "series")
    for stage in ("adc", "cds"):
        d = run / "calib" / stage / "AIRS-CH0"
        assert sorted(p.name for p in d.iterdir()) == ["meta.json", "read_var.npy"]
    assert not (run / ".scratch").exists()
    assert (run / "calib" / "photometry" / "AIRS-CH0" / "photometry_flux.npy").is_file()
    assert not os.path.lexists(run / "calib" / "cds" / "FGS1" / "data.npy")   # the link went, not its target
    assert (outside / "keep_me.npy").read_bytes() == b"y" * 10
    assert sorted(p.name for p in (outside / "stage").iterdir()) == sorted(
        ["data.npy", "var.npy", "dq.npy", "meta.json", "read_var.npy"])       # never followed into
    assert freed >= 2 * 3 * 1000 + 5 * 1000
    assert check_complete(run, "abc", 7)[0]

    prune_run_dir(run, "depths")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "debug_log.md", "depths.csv", "qc.json",
                                                     "run_hash_summary.json", "run_state.json"]
    assert (outside / "stage" / "data.npy").is_file()                         # the linked dir itself was unlinked
    assert check_complete(run, "abc", 7)[0]
    assert prune_run_dir(run, "all") == 0
    with pytest.raises(ValueError, match="--keep"):
        prune_run_dir(run, "nothing")


def test_progress_lines_and_bar():
    plain = io.StringIO()
    prog = BatchProgress(3, stream=plain, tty=False)
    prog.started(1)
    prog.started(2)
    prog.finished(PlanetOutcome(1, "ok", "", 12.0, 500.0, "vmhwm", 11.0, "h", "tcp://127.0.0.1:1", False, "/r/1"))
    prog.draw(force=True)                                   # no bar on a pipe
    prog.finished(PlanetOutcome(2, "failed", "DataLayoutError: f.parquet: broken", 1.0, worker="tcp://w"))
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in plain.getvalue()
    assert lines[0].startswith("[1/3] planet 1 ok in 12.0 s on tcp://127.0.0.1:1, peak 500 MB")
    assert "ok 1, failed 0, running 1" in lines[0]
    assert "failed in 1.0 s" in lines[1] and "f.parquet: broken" in lines[1] and "ok 1, failed 1, running 0" in lines[1]
    assert "ETA" in lines[1] and "ETA --:--:--" not in lines[1]

    term = io.StringIO()
    bar = BatchProgress(4, stream=term, tty=True, width=8)
    bar.draw(force=True)
    assert term.getvalue().startswith("\r\x1b[K[--------] 0/4") and "ETA --:--:--" in term.getvalue()
    bar.finished(PlanetOutcome(1, "ok", "", 1.0))
    bar.finished(PlanetOutcome(2, "ok", "", 1.0))
    assert "[####----] 2/4" in term.getvalue()
    bar.close()
    assert term.getvalue().endswith("\n")


@pytest.mark.parametrize("args, expected", [
    (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
    (["--workers", "-1"], "argument --workers: must be >= 1, got -1"),
    (["--workers", "two"], "argument --workers: 'two' is not an integer"),
    (["--planets", "2000001,abc"], "argument --planets: 'abc' is not a planet id"),
    (["--planets", "2000001,2000002,2000001"], "argument --planets: duplicate planet ids 2000001"),
    (["--planets", "2000001,42,43"], "argument --planets: not in "),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "argument --workers: the workers of an existing"),
    (["--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "x.json"], "argument --scheduler-file: not allowed"),
    (["--scheduler-file", "/nonexistent/scheduler.json"], "argument --scheduler-file: /nonexistent/scheduler.json"),
])
def test_batch_arguments_are_checked(three_planet_root, tmp_path, capsys, args, expected):
    code = main(["batch", "--config-name", "calib/fast", "--out", str(tmp_path / "out"), *args,
                 f"data.root={three_planet_root}"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("spectramind batch: error: " + expected), err
    if expected.endswith("not in "):
        assert err.strip().endswith("train: 42, 43")
    assert not (tmp_path / "out" / "batch_summary.json").exists()


def test_batch_out_must_be_a_directory(three_planet_root, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["batch", "--config-name", "calib/fast", "--out", str(afile), f"data.root={three_planet_root}"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"spectramind batch: error: argument --out: {afile} exists and is not a directory"
    assert main(["batch", "--config-name", "calib/fast", "--out", str(afile / "sub"),
                 f"data.root={three_planet_root}"]) == 2
    assert "argument --out: cannot create directory" in capsys.readouterr().err


def test_planet_hashes_are_the_config_hash_of_each_planet(three_planet_root):
    from calib_core.batch import _planet_hashes
    from calib_core.config import compose_config, config_hash

    cfg = compose_config("calib/fast", [f"data.root={three_planet_root}"])
    hashes = _planet_hashes(cfg, [2000001, 2000002, 7])
    for pid in (2000001, 2000002, 7):
        assert hashes[pid] == config_hash(compose_config("calib/fast", [f"data.root={three_planet_root}",
                                                                         f"data.planet_id={pid}"]))
    assert len(set(hashes.values())) == 3
