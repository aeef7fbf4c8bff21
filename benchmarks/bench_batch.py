"""Batch throughput: planets per hour of ``spectramind batch`` on this machine with 1 and 2 workers.

Generates ``--planets`` demo planets (default size: 1250 read pairs per instrument, the built-in demo
planet's size, ~62 MB of raw data each; ``--n-pairs`` for another size) once into ``--data``, then runs the
batch on a fresh output directory for each worker count (a ``LocalCluster`` started by the batch, as
``spectramind batch --workers N`` does) and prints, per worker count: the wall time of the whole batch
(cluster start-up included), planets per hour from it, the mean wall and CPU time of a planet's task, the
largest peak RSS of a worker process while it ran a planet, the disk a planet keeps (``--keep``) and the
planets an 8-hour night would take at the measured rate.

    python benchmarks/bench_batch.py [--planets 6] [--workers 1 2] [--profile calib/nominal] [--keep series]

The machine may be shared: the 1-minute load average before and after each run is printed with it.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import time
from pathlib import Path

from calib_core.batch import run_batch
from calib_core.sim import DEFAULT_N_PAIRS, make_demo

FIRST_ID = 3100001
NIGHT_H = 8.0


def _dataset(data: Path, n: int, n_pairs: int) -> Path:
    """``n`` demo planets (seeds 100.., ids 3100001..) merged into one Kaggle-layout root (generated once)."""
    root = data / "root"
    ids = [FIRST_ID + i for i in range(n)]
    if root.is_dir() and all((root / "train" / str(pid)).is_dir() for pid in ids):
        return root
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    make_demo(root, seed=100, n_pairs=n_pairs, planet_id=ids[0])
    for i, pid in enumerate(ids[1:], start=1):
        one = make_demo(data / "one", seed=100 + i, n_pairs=n_pairs, planet_id=pid, overwrite=True)
        shutil.copytree(one / "train" / str(pid), root / "train" / str(pid))
        for name in ("train.csv", "train_star_info.csv"):          # make_demo writes one-planet CSVs
            with open(one / name) as fh:
                rows = list(csv.reader(fh))[1:]
            with open(root / name, "a", newline="") as fh:
                csv.writer(fh).writerows(rows)
    shutil.rmtree(data / "one", ignore_errors=True)
    print(f"generated {n} demo planets ({n_pairs} pairs per instrument) in {time.perf_counter() - t0:.0f} s: {root}")
    return root


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planets", type=int, default=6)
    ap.add_argument("--n-pairs", type=int, default=DEFAULT_N_PAIRS, help="read pairs per instrument per planet")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profile", default="calib/nominal")
    ap.add_argument("--keep", default="series", choices=("all", "series", "depths"))
    ap.add_argument("--data", type=Path, default=None,
                    help="where the demo planets are generated once (default ~/.cache/spectramind/bench-batch-...)")
    ap.add_argument("--out", type=Path, default=Path("runs") / "bench_batch")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for spectramind batch")
    args = ap.parse_args()

    data = args.data or Path(os.environ.get("SPECTRAMIND_CACHE_DIR", Path.home() / ".cache" / "spectramind")) / (
        f"bench-batch-{args.planets}x{args.n_pairs}")
    root = _dataset(data, args.planets, args.n_pairs)
    print(f"{args.planets} planets of {args.n_pairs} read pairs per instrument, profile {args.profile}, "
          f"--keep {args.keep}, {os.cpu_count()} cores")
    rows = []
    for workers in args.workers:
        out = args.out / f"workers{workers}"
        shutil.rmtree(out, ignore_errors=True)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        outcomes = run_batch(args.profile, [f"data.root={root}", *args.overrides], out_dir=out, workers=workers,
                             keep=args.keep, dashboard_address=None, progress=True)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
        ok = [o for o in outcomes if o.status == "ok"]
        if len(ok) != len(outcomes):
            bad = [f"{o.planet_id}: {o.message}" for o in outcomes if o.status != "ok"]
            raise SystemExit("benchmark planets failed: " + "; ".join(bad))
        if any(o.reused for o in outcomes):
            raise SystemExit("a planet was reused: the output directory was not fresh")
        rate = len(ok) / wall * 3600
        task = statistics.mean(o.seconds for o in ok)
        cpu = statistics.mean(o.cpu_seconds for o in ok if o.cpu_seconds is not None)
        peaks = [o.peak_rss_mb for o in ok if o.peak_rss_mb is not None]
        disk = statistics.mean(_du(Path(o.run_dir)) for o in ok)
        rows.append((workers, wall, rate, task, cpu, max(peaks) if peaks else None, disk, load0, load1))
        print(f"workers {workers}: {len(ok)} planets in {wall:.1f} s -> {rate:.0f} planets/h")

    print(f"\n{'workers':>7} {'wall s':>8} {'planets/h':>10} {'task s':>8} {'CPU s':>7} {'peak RSS MB':>12} "
          f"{'disk/planet MB':>15} {'per 8 h night':>14} {'load before/after':>18}")
    for workers, wall, rate, task, cpu, peak, disk, load0, load1 in rows:
        peak_s = f"{peak:.0f}" if peak is not None else "n/a"
        print(f"{workers:>7} {wall:>8.1f} {rate:>10.0f} {task:>8.1f} {cpu:>7.1f} {peak_s:>12} {disk / 2**20:>15.1f} "
              f"{rate * NIGHT_H:>14.0f} {load0:>8.1f} / {load1:<7.1f}")
    cpu_all = statistics.mean(r[4] for r in rows)
    print(f"(task s: wall time of a planet's task, mean; CPU s: its worker process's CPU time, mean; "
          f"{os.cpu_count()} idle cores could at most do {os.cpu_count() * 3600 / cpu_all:.0f} planets/h "
          f"at {cpu_all:.1f} CPU s per planet)")
    if len(rows) > 1:
        base = rows[0][2]
        print("scaling vs " + f"{rows[0][0]} worker(s): " + ", ".join(
            f"{w} workers x{r / base:.2f}" for w, _, r, *_ in rows[1:]))


if __name__ == "__main__":
    main()
