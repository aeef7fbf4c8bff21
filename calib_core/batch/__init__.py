"""Multi-planet batches on Dask distributed: a ``LocalCluster``, or a cluster that already runs.

Each planet runs the full chain as one Dask task (one thread per worker process
is the intended layout: the stages stream in bounded memory, so ``n`` workers
need about ``n`` x the single-planet peak).  A failing planet is recorded and
never stops the others.  The batch writes

* ``<out>/<planet_id>/``          one run directory per planet (the usual contract),
  pruned after a successful planet as ``keep`` says (:func:`prune_run_dir`),
* ``<out>/submission.csv``        every successful planet's depths in the Kaggle layout, by planet id,
* ``<out>/batch_summary.json``    per planet: status, message, seconds, peak memory, config hash,
  the worker that ran it and whether it was reused; rewritten atomically as planets finish.

Resuming: a planet whose run directory is complete for the batch's config hash
(:func:`check_complete`) is not scheduled again (``"reused": true``); failed
planets and planets lost to an interrupt are.  A worker that dies is replaced
by Dask (its tasks are rescheduled elsewhere, up to
``distributed.scheduler.allowed-failures`` times).

On an existing cluster (``scheduler=`` / ``scheduler_file=``) the workers must
run this package in the same version and see ``data.root`` and ``out_dir`` at
the same paths (a shared filesystem): the client decides what is complete,
prunes reused planets and writes the submission from the run directories.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..store import atomic_write_json, atomic_write_text
from .progress import BatchProgress
from .rundirs import KEEP_CHOICES, check_complete, prune_run_dir
from .worker import PlanetOutcome, _calibrate_one, _one_line

log = logging.getLogger(__name__)

__all__ = ["KEEP_CHOICES", "BatchProgress", "PlanetOutcome", "check_complete", "prune_run_dir",
           "resolve_planet_ids", "run_batch"]


def resolve_planet_ids(root: str | Path, split: str, planet_ids: Iterable[Any] | None) -> list[int]:
    """The planets to run: ``planet_ids`` checked (integers, unique, present), or every planet of the split.

    Raises
    ------
    ValueError
        One line naming the offending ids (``--planets ...``).
    calib_core.io.DataLayoutError
        The root or split directory does not exist.
    """
    from ..io import list_planets

    available = list_planets(root, split)
    if planet_ids is None:
        if not available:
            raise ValueError(f"{Path(root) / split}: no planets to calibrate")
        return available
    ids: list[int] = []
    for p in planet_ids:
        text = str(p).strip()
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"--planets: {text!r} is not a planet id (a non-negative integer)")
        ids.append(int(text))
    if not ids:
        raise ValueError("--planets: no planet ids given")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError("--planets: duplicate planet ids " + ", ".join(map(str, dupes)))
    known = set(available)
    missing = [i for i in ids if i not in known]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        raise ValueError(f"--planets: not in {Path(root) / split}: {shown}")
    return ids


class _Summary:
    """``batch_summary.json``, rewritten atomically on every change."""

    def __init__(self, path: Path, header: dict, outcomes: dict[int, PlanetOutcome]):
        self.path = path
        self.header = header
        self.outcomes = outcomes

    def write(self, **extra: Any) -> None:
        self.header.update(extra)
        planets = [asdict(self.outcomes[pid]) for pid in sorted(self.outcomes)]
        count = lambda s: sum(p["status"] == s for p in planets)  # noqa: E731
        atomic_write_json(self.path, {
            **self.header,
            "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_planets": len(planets), "n_ok": count("ok"), "n_failed": count("failed"),
            "n_reused": sum(bool(p["reused"]) for p in planets),
            "n_pending": count("pending"), "n_interrupted": count("interrupted"),
            "planets": planets,
        })


def _submission_row(run_dir: Path, planet_id: int) -> tuple[str, str]:
    """``(header, row)`` of a run's ``depths.csv``, checked to be this planet's."""
    path = run_dir / "depths.csv"
    lines = path.read_text().splitlines()
    if len(lines) < 2 or lines[1].split(",", 1)[0].strip() != str(planet_id):
        raise ValueError(f"{path}: expected a header and a row for planet {planet_id}")
    return lines[0], lines[1]


def _write_submission(out_dir: Path, rows: dict[int, tuple[str, str]]) -> None:
    """``submission.csv``: one row per successful planet, ordered by planet id (header only if none)."""
    from ..io import N_TARGETS

    header = next(iter(rows.values()))[0] if rows else ",".join(
        ["planet_id", *[f"wl_{i + 1}" for i in range(N_TARGETS)], *[f"sigma_{i + 1}" for i in range(N_TARGETS)]])
    body = "".join(rows[pid][1] + "\n" for pid in sorted(rows))
    atomic_write_text(out_dir / "submission.csv", header + "\n" + body)


def _dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 -- KeyError when the scheduler serves no dashboard
        return None


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while the local worker processes start, so they inherit the disposition.

    A Ctrl-C in a terminal goes to the whole process group; the batch (the
    main process) handles it by closing the cluster.  Only in the main thread
    (elsewhere signal handlers cannot be set; nothing changes).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _open_client(scheduler: str | None, scheduler_file: str | Path | None, workers: int,
                 dashboard_address: str | None, connect_timeout: float) -> tuple[Any, Any, str]:
    """``(client, cluster or None, description)``; a LocalCluster bound to 127.0.0.1 unless a scheduler is given."""
    from dask.distributed import Client, LocalCluster

    if scheduler or scheduler_file:
        what = f"--scheduler {scheduler}" if scheduler else f"--scheduler-file {scheduler_file}"
        try:
            if scheduler:
                client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
            else:
                client = Client(scheduler_file=str(scheduler_file), timeout=connect_timeout, set_as_default=False)
        except (OSError, ValueError, TimeoutError) as exc:
            raise ConnectionError(f"{what}: cannot connect to the Dask scheduler ({_one_line(exc)})") from None
        return client, None, f"scheduler {client.scheduler.address}"
    with _sigint_ignored():          # Ctrl-C reaches the batch, which closes the workers (no tracebacks of theirs)
        # every server on 127.0.0.1; without a dashboard the scheduler still serves its small HTTP
        # endpoints (health, metrics), so it gets a loopback address too
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=dashboard_address or "127.0.0.1:0",
                               scheduler_kwargs={"dashboard": dashboard_address is not None})
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return client, cluster, f"local cluster of {workers} worker process{'es' if workers > 1 else ''}"


def _planet_hashes(cfg: Any, ids: Sequence[int]) -> dict[int, str]:
    """``config_hash`` of ``cfg`` with ``data.planet_id`` set to each id (what each planet's run records).

    :func:`calib_core.config.config_hash` walks the whole config (~15 ms; 1100 planets would wait ~20 s), so the
    payload is built once and only the planet id changes.  The shortcut is checked against ``config_hash``
    on the first planet; should the two ever disagree (``config_hash`` changed), every planet is hashed by
    ``config_hash`` itself.
    """
    import hashlib
    import json

    from omegaconf import OmegaConf

    from ..config import config_hash

    calib = OmegaConf.to_container(cfg.calib, resolve=True)
    data = OmegaConf.to_container(cfg.get("data", {}), resolve=True)

    def fast(pid: int) -> str:
        payload = {"calib": calib, "data": {**data, "planet_id": pid}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def exact(pid: int) -> str:
        previous = cfg.data.planet_id
        cfg.data.planet_id = pid
        try:
            return config_hash(cfg)
        finally:
            cfg.data.planet_id = previous

    if ids and fast(ids[0]) != exact(ids[0]):
        log.warning("config_hash changed its payload: hashing every planet with it (slower)")
        return {pid: exact(pid) for pid in ids}
    return {pid: fast(pid) for pid in ids}


def run_batch(config_name: str, overrides: Sequence[str] = (), *, out_dir: str | Path,
              root: str | Path | None = None, split: str | None = None, planet_ids: Sequence[Any] | None = None,
              workers: int = 2, scheduler: str | None = None, scheduler_file: str | Path | None = None,
              keep: str = "series", config_dir: str | Path | None = None,
              dashboard_address: str | None = "127.0.0.1:8787", connect_timeout: float = 30.0,
              progress: BatchProgress | bool | None = True) -> list[PlanetOutcome]:
    """Calibrate many planets of a dataset in parallel with Dask distributed; resumable.

    Parameters
    ----------
    config_name, overrides, config_dir
        Profile and overrides, as for ``spectramind calibrate``; composed once
        here and sent to the workers as the effective config (the workers need
        no access to ``configs/``).
    out_dir
        Batch output directory (created).
    root, split
        Dataset root (Kaggle layout) and split; default ``data.root`` / ``data.split`` of the config.
    planet_ids
        Planets to run (checked: integers, unique, present); default ``data.planet_id``
        when set, else every planet of the split.
    workers
        Worker processes of the local cluster (ignored with a scheduler).
    scheduler, scheduler_file
        Address of a running Dask scheduler (anything ``dask.distributed.Client``
        accepts, e.g. ``tcp://host:8786``) or its scheduler file; default: start a
        ``LocalCluster`` on 127.0.0.1.
    keep
        What a successful planet keeps (:func:`prune_run_dir`): all | series | depths.
    dashboard_address
        Dashboard of the local cluster (None: no dashboard).
    progress
        A :class:`BatchProgress`, True (on stdout) or False/None (silent).

    Returns
    -------
    list of PlanetOutcome
        One per planet, ordered by planet id.

    Raises
    ------
    KeyboardInterrupt
        After ``batch_summary.json`` and ``submission.csv`` were written with what finished.
    """
    from omegaconf import OmegaConf

    from ..config import compose_config, validate_config

    if keep not in KEEP_CHOICES:
        raise ValueError(f"--keep {keep!r}: must be one of {', '.join(KEEP_CHOICES)}")
    if not scheduler and not scheduler_file and int(workers) < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    name_path = Path(config_name)
    if name_path.suffix in (".yaml", ".yml") and name_path.is_file():
        config_name = str(name_path.resolve())
    cfg = compose_config(config_name, list(overrides), config_dir)
    if root is None:
        root = cfg.data.root
    if root is None:
        raise ValueError("batch needs data.root=DIR (a dataset in the Kaggle layout)")
    root = Path(str(root)).expanduser().resolve()
    cfg.data.root = str(root)
    if split is not None:
        cfg.data.split = split
    validate_config(cfg)
    split = str(cfg.data.split)
    if planet_ids is None and cfg.data.planet_id is not None:
        planet_ids = [cfg.data.planet_id]
    ids = resolve_planet_ids(root, split, planet_ids)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    cfg_data = OmegaConf.to_container(cfg, resolve=True)
    outcomes: dict[int, PlanetOutcome] = {}
    rows: dict[int, tuple[str, str]] = {}
    to_run: list[int] = []
    hashes = _planet_hashes(cfg, ids)
    for pid in ids:
        chash = hashes[pid]
        run_dir = out_dir / str(pid)
        complete, reason = check_complete(run_dir, chash, pid)
        if complete:
            try:
                rows[pid] = _submission_row(run_dir, pid)
            except (OSError, ValueError) as exc:
                complete, reason = False, _one_line(exc)
        if complete:
            outcomes[pid] = PlanetOutcome(pid, "ok", f"reused: {reason}", 0.0, config_hash=chash, reused=True,
                                          run_dir=str(run_dir), pruned_bytes=prune_run_dir(run_dir, keep))
        else:
            log.info("planet %s: %s; scheduling it", pid, reason)
            outcomes[pid] = PlanetOutcome(pid, "pending", config_hash=chash, run_dir=str(run_dir))
            to_run.append(pid)

    if progress is True:
        progress = BatchProgress(len(ids))
    elif progress is False:
        progress = None
    summary = _Summary(out_dir / "batch_summary.json", {
        "config_name": config_name, "overrides": list(overrides), "root": str(root), "split": split, "keep": keep,
        "scheduler": scheduler or (str(scheduler_file) if scheduler_file else None),
        "local_workers": None if (scheduler or scheduler_file) else int(workers),
        "dashboard": None, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "finished": False, "interrupted": False,
    }, outcomes)
    summary.write()
    if progress is not None:
        for pid in ids:
            if outcomes[pid].reused:
                progress.finished(outcomes[pid])
        if progress.reused:
            progress.print(f"batch: {progress.reused} of {len(ids)} planets reused (complete run directories "
                           f"for this config); {len(to_run)} to run")

    interrupted = False
    try:
        if to_run:
            _run_on_cluster(cfg_data, to_run, out_dir, keep, outcomes, rows, summary, progress,
                            scheduler, scheduler_file, min(int(workers), len(to_run)), dashboard_address,
                            connect_timeout)
    except KeyboardInterrupt:
        interrupted = True
        for o in outcomes.values():
            if o.status == "pending":
                o.status, o.message = "interrupted", "batch interrupted before this planet finished"
        raise
    finally:
        _write_submission(out_dir, rows)
        summary.write(finished=not interrupted, interrupted=interrupted)
        if progress is not None:
            progress.close()
    return [outcomes[pid] for pid in sorted(outcomes)]


def _run_on_cluster(cfg_data: dict, to_run: list[int], out_dir: Path, keep: str,
                    outcomes: dict[int, PlanetOutcome], rows: dict[int, tuple[str, str]], summary: _Summary,
                    progress: BatchProgress | None, scheduler: str | None, scheduler_file: str | Path | None,
                    workers: int, dashboard_address: str | None, connect_timeout: float) -> None:
    from dask.distributed import as_completed

    client, cluster, where = _open_client(scheduler, scheduler_file, workers, dashboard_address, connect_timeout)
    futures: dict[Any, int] = {}
    topic = f"spectramind-batch-{uuid.uuid4().hex[:12]}"     # the tasks announce their start here
    try:
        if progress is not None:
            progress.reset_clock()                 # elapsed and ETA count from the cluster being up
        dashboard = _dashboard_link(client) if cluster is None or dashboard_address is not None else None
        n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        summary.write(dashboard=dashboard, workers_at_start=n_workers)
        if progress is not None:
            progress.print(f"batch: {len(to_run)} planet{'s' if len(to_run) != 1 else ''} on {where} "
                           f"({n_workers} worker{'s' if n_workers != 1 else ''} connected)"
                           + (f"; dashboard: {dashboard}" if dashboard else "; no dashboard"))
            if n_workers == 0:
                progress.print("batch: no workers connected yet: the planets wait for the cluster to add some")
        if progress is not None:
            client.subscribe_topic(topic, lambda event: progress.started(int(event[1]["planet_id"])))
        token = topic.rsplit("-", 1)[1]
        for pid in to_run:
            fut = client.submit(_calibrate_one, cfg_data, pid, str(out_dir / str(pid)), keep, topic,
                                key=f"planet-{pid}-{token}", pure=False)
            futures[fut] = pid
        ac = as_completed(list(futures), loop=client.loop)
        while futures:
            batch = ac.next_batch(block=False)
            for fut in batch:
                pid = futures.pop(fut)
                o = _future_outcome(fut, pid, outcomes[pid])
                fut.release()              # the scheduler forgets it: never recomputed if its worker leaves
                if o.status == "ok":
                    try:
                        rows[pid] = _submission_row(Path(o.run_dir), pid)
                    except (OSError, ValueError) as exc:
                        o.status, o.message = "failed", _one_line(exc)
                outcomes[pid] = o
                summary.write()
                if progress is not None:
                    progress.finished(o)
            if not batch:
                if progress is not None:
                    progress.draw()
                time.sleep(0.2)
    finally:
        try:
            if futures:                    # interrupted: nothing queued keeps running for this batch
                client.cancel(list(futures), force=True)
            if progress is not None:
                client.unsubscribe_topic(topic)
        except Exception:  # noqa: BLE001 -- the connection may already be gone
            pass
        client.close()
        if cluster is not None:
            # the work is done (or abandoned): a worker slow to exit (interpreter shutdown with numba, scipy,
            # astropy loaded takes seconds on a busy machine) is killed by its nanny, which needs no warning
            nanny_log = logging.getLogger("distributed.nanny")
            level = nanny_log.level
            nanny_log.setLevel(logging.ERROR)
            try:
                cluster.close()
            finally:
                nanny_log.setLevel(level)


def _future_outcome(fut: Any, planet_id: int, before: PlanetOutcome) -> PlanetOutcome:
    """The outcome a finished future carries; a task that could not run (dead workers, cancelled) is failed."""
    if fut.status == "finished":
        try:
            return PlanetOutcome.from_dict(fut.result())
        except Exception as exc:  # noqa: BLE001 -- e.g. the result could not be transferred
            msg = _one_line(exc)
    elif fut.status == "error":
        exc = fut.exception()
        msg = _one_line(exc)
        if type(exc).__name__ == "KilledWorker":
            msg = f"KilledWorker: the workers running planet {planet_id} died repeatedly ({exc})".splitlines()[0]
    else:
        msg = f"task {fut.status} by the Dask scheduler"
    return PlanetOutcome(planet_id, "failed", msg, config_hash=before.config_hash, run_dir=before.run_dir)
