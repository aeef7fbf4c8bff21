"""Multi-planet batches on a Dask distributed ``LocalCluster``.

Each planet runs the full chain in its own worker process (one thread per
worker: the stages stream in bounded memory, so ``workers`` planets at once
need about ``workers`` x the single-planet peak).  A failing planet is
recorded and never stops the others.  The batch writes

* ``<out>/<planet_id>/``            one run directory per planet (the usual contract),
* ``<out>/submission.csv``          all successful planets' depths in the Kaggle layout,
* ``<out>/batch_summary.json``      status, message and seconds per planet.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .store import atomic_write_json, atomic_write_text

__all__ = ["PlanetOutcome", "run_batch"]


@dataclass
class PlanetOutcome:
    planet_id: int
    status: str          #: "ok" | "failed"
    message: str
    seconds: float
    run_dir: str


def _calibrate_one(config_name: str, overrides: list[str], root: str, split: str, planet_id: int,
                   run_dir: str) -> PlanetOutcome:
    from .chain import run_chain
    from .config import compose_config

    t0 = time.perf_counter()
    try:
        cfg = compose_config(config_name, [*overrides, f"data.root={root}", f"data.split={split}",
                                           f"data.planet_id={planet_id}", f"run_dir={run_dir}"])
        result = run_chain(cfg, raise_on_failure=False)
        status, message = result.status, result.message
    except Exception as exc:  # recorded per planet; the batch goes on
        status, message = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
    return PlanetOutcome(planet_id, status, message, round(time.perf_counter() - t0, 2), run_dir)


def run_batch(config_name: str, overrides: Sequence[str], *, root: str | Path, out_dir: str | Path,
              split: str = "train", planet_ids: Sequence[int] | None = None, workers: int = 2) -> list[PlanetOutcome]:
    """Calibrate many planets of a dataset in parallel with Dask distributed.

    Parameters
    ----------
    config_name, overrides
        Profile and overrides, as for ``spectramind calibrate``.
    root, split, planet_ids
        Dataset root (Kaggle layout), split, and planets (default: all of the split).
    out_dir
        Batch output directory.
    workers
        Worker processes of the local cluster.
    """
    from dask.distributed import Client, LocalCluster

    from .io import list_planets

    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    ids = list(planet_ids) if planet_ids else list_planets(root, split)
    if not ids:
        raise ValueError(f"{root / split}: no planets to calibrate")
    out_dir.mkdir(parents=True, exist_ok=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        futures = [client.submit(_calibrate_one, config_name, list(overrides), str(root), split, int(pid),
                                 str(out_dir / str(pid)), pure=False) for pid in ids]
        outcomes = client.gather(futures)
    _write_submission(out_dir, outcomes)
    atomic_write_json(out_dir / "batch_summary.json", {
        "config_name": config_name, "overrides": list(overrides), "root": str(root), "split": split,
        "planets": [asdict(o) for o in outcomes],
        "n_ok": sum(o.status == "ok" for o in outcomes), "n_failed": sum(o.status != "ok" for o in outcomes),
    })
    return outcomes


def _write_submission(out_dir: Path, outcomes: list[PlanetOutcome]) -> None:
    header, rows = None, []
    for o in outcomes:
        path = Path(o.run_dir) / "depths.csv"
        if o.status != "ok" or not path.is_file():
            continue
        head, row = path.read_text().splitlines()[:2]
        header = header or head
        rows.append(row)
    if header is not None:
        atomic_write_text(out_dir / "submission.csv", header + "\n" + "\n".join(rows) + "\n")
