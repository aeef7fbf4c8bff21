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
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

from .frames import atomic_write_json, atomic_write_text

__all__ = ["KEEP_CHOICES", "PlanetOutcome", "BatchProgress", "check_complete", "prune_run_dir",
           "resolve_planet_ids", "run_batch"]

log = logging.getLogger(__name__)

#: what a successful planet's run directory keeps (see :func:`prune_run_dir`)
KEEP_CHOICES = ("all", "series", "depths")
#: detector stages whose frame planes ``keep="series"`` removes
FRAME_STAGES = ("adc", "dark", "flat", "cds")
FRAME_PLANES = ("data.npy", "var.npy", "dq.npy")
#: the files ``keep="depths"`` leaves (``depths_calibrated.csv`` is a submission row too, when written)
RUN_FILES = ("depths.csv", "depths_calibrated.csv", "qc.json", "config.yaml", "run_hash_summary.json",
             "debug_log.md")


@dataclass
class PlanetOutcome:
    """What the batch knows about one planet (one entry of ``batch_summary.json``)."""

    planet_id: int
    status: str                            #: "ok" | "failed" | "pending" | "interrupted"
    message: str = ""                      #: why it failed (the culprit named), or what was reused
    seconds: float | None = None           #: wall time of the task (0.0 when reused)
    peak_rss_mb: float | None = None       #: peak resident memory of the worker process during the task
    peak_rss_method: str | None = None     #: "vmhwm" (kernel peak, reset at task start) | "sampled" | None
    cpu_seconds: float | None = None       #: user + system CPU time of the worker process during the task
    config_hash: str | None = None
    worker: str | None = None              #: Dask address of the worker that ran it
    reused: bool = False                   #: complete run directory found: nothing recomputed
    run_dir: str = ""
    pruned_bytes: int = 0                  #: bytes of files removed by the ``keep`` policy

    @classmethod
    def from_dict(cls, d: dict) -> "PlanetOutcome":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------
# planets, completeness, pruning
# ---------------------------------------------------------------------------


def resolve_planet_ids(root: str | Path, split: str, planet_ids: Iterable[Any] | None) -> list[int]:
    """The planets to run: ``planet_ids`` checked (integers, unique, present), or every planet of the split.

    Raises
    ------
    ValueError
        One line naming the offending ids (``--planets ...``).
    calib_core.io.DataLayoutError
        The root or split directory does not exist.
    """
    from .io import list_planets

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


def check_complete(run_dir: str | Path, config_hash: str, planet_id: int | None = None) -> tuple[bool, str]:
    """Whether ``run_dir`` holds a finished, successful run of this config; ``(complete, reason)``.

    Complete means: ``run_hash_summary.json`` says ``status: ok`` with the same
    ``config_hash`` (and planet), ``depths.csv`` exists, and neither
    ``depths.csv`` nor ``config.yaml`` is newer than ``run_hash_summary.json``
    (the chain writes ``config.yaml`` first and the summary last, so a later run
    that was interrupted before its summary -- possibly with another config --
    leaves a newer ``config.yaml`` and the directory is not taken as complete).
    Pruning (:func:`prune_run_dir`) keeps all of these files.
    """
    import json

    run_dir = Path(run_dir)
    summary_path = run_dir / "run_hash_summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        summary_mtime = summary_path.stat().st_mtime_ns
    except (OSError, ValueError) as exc:
        return False, f"no readable run_hash_summary.json ({type(exc).__name__})"
    if not isinstance(summary, dict) or summary.get("status") != "ok":
        return False, f"previous run status {summary.get('status') if isinstance(summary, dict) else None!r}"
    if summary.get("config_hash") != config_hash:
        return False, "previous run has another config hash"
    if planet_id is not None and (summary.get("planet") or {}).get("planet_id") != planet_id:
        return False, "previous run is of another planet"
    for name in ("depths.csv", "config.yaml"):
        try:
            mtime = (run_dir / name).stat().st_mtime_ns
        except OSError:
            return False, f"{name} missing"
        if mtime > summary_mtime:
            return False, f"{name} is newer than run_hash_summary.json (a later run did not finish)"
    return True, f"complete run for config {config_hash[:12]}"


def _inside(path: Path, root: Path) -> bool:
    """``path`` (not followed if it is a link itself) lies inside ``root``."""
    try:
        return path.parent.resolve().is_relative_to(root)
    except OSError:
        return False


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _remove(path: Path, root: Path) -> int:
    """Remove a file, link or directory tree inside ``root`` (links are removed, never followed); bytes freed."""
    if not os.path.lexists(path):
        return 0
    if not _inside(path, root):
        log.warning("not pruning %s: it lies outside the run directory %s", path, root)
        return 0
    if path.is_dir() and not path.is_symlink():
        size = _tree_bytes(path)
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size


def prune_run_dir(run_dir: str | Path, keep: str) -> int:
    """Remove what a finished planet does not need to keep; returns the bytes removed.

    ``keep``:

    * ``"all"``: nothing removed.
    * ``"series"``: the frame planes ``data.npy``, ``var.npy``, ``dq.npy`` of
      ``calib/{adc,dark,flat,cds}/<instrument>/`` and ``.scratch/``; the
      stages' ``meta.json``, metrics and small maps stay, and so do the
      series-level outputs (photometry, trace, phase, depths, top_level_calib).
      A pruned frame stage no longer loads as a cached output, so a later run
      with a changed config recomputes it instead of reading missing planes.
    * ``"depths"``: only :data:`RUN_FILES` (depths.csv, qc.json, config.yaml,
      run_hash_summary.json, debug_log.md, and depths_calibrated.csv if written).

    Every removed path lies inside ``run_dir``; symbolic links are removed, never followed.
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"--keep {keep!r}: must be one of {', '.join(KEEP_CHOICES)}")
    root = Path(run_dir).resolve()
    if keep == "all" or not root.is_dir():
        return 0
    freed = 0
    if keep == "depths":
        for entry in sorted(root.iterdir()):
            if entry.name not in RUN_FILES:
                freed += _remove(entry, root)
        return freed
    calib = root / "calib"
    for stage in FRAME_STAGES:
        stage_dir = calib / stage
        if stage_dir.is_symlink() or not stage_dir.is_dir() or not _inside(stage_dir, root):
            continue
        for inst_dir in sorted(stage_dir.iterdir()):
            if inst_dir.name.startswith(".") or inst_dir.is_symlink() or not inst_dir.is_dir():
                continue
            for name in FRAME_PLANES:
                freed += _remove(inst_dir / name, root)
    freed += _remove(root / ".scratch", root)
    return freed


# ---------------------------------------------------------------------------
# the task (runs on a worker)
# ---------------------------------------------------------------------------


def _vmhwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class _PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs.

    Linux: the kernel's peak (VmHWM) is reset at the start (``/proc/self/clear_refs``
    ``5``) and read at the end -- exact.  Elsewhere the RSS is sampled every
    0.1 s in a thread (psutil).  Only meaningful when no other task shares the
    process: with ``exclusive=False`` nothing is measured (``peak_mb`` None).
    """

    def __init__(self, exclusive: bool):
        self.exclusive = exclusive
        self.method: str | None = None
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def __enter__(self) -> "_PeakRSS":
        if not self.exclusive:
            return self
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            if _vmhwm_kb() is not None:
                self.method = "vmhwm"
                return self
        except OSError:
            pass
        try:
            import psutil

            proc = psutil.Process()
        except Exception:  # noqa: BLE001 -- no way to measure: record null
            return self
        self.method = "sampled"

        def sample() -> None:
            while True:
                self._peak = max(self._peak, proc.memory_info().rss)
                if self._stop.wait(0.1):
                    return

        self._thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.method == "vmhwm":
            kb = _vmhwm_kb()
            self.peak_mb = round(kb / 1024, 1) if kb is not None else None
            self.method = self.method if kb is not None else None
        elif self.method == "sampled" and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = round(self._peak / 2**20, 1)


def _worker_info() -> tuple[str | None, int | None, Any]:
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return None, None, None
    state = getattr(w, "state", None)
    return w.address, getattr(state, "nthreads", None), w


def _calibrate_one(cfg_data: dict, planet_id: int, run_dir: str, keep: str, topic: str | None = None) -> dict:
    """Run the chain on one planet (a Dask task); always returns an outcome dict, never raises."""
    from omegaconf import OmegaConf

    from .chain import run_chain
    from .config import config_hash

    address, nthreads, worker = _worker_info()
    if worker is not None and topic:
        worker.log_event(topic, {"event": "start", "planet_id": planet_id, "worker": address})
    t0 = time.perf_counter()
    exclusive = nthreads in (None, 1)            # no other task shares the process: its figures are this planet's
    cpu0 = _cpu_seconds()
    out = PlanetOutcome(planet_id, "failed", run_dir=run_dir, worker=address)
    with _PeakRSS(exclusive=exclusive) as mem:
        try:
            cfg = OmegaConf.create(cfg_data)
            cfg.data.planet_id = planet_id
            cfg.run_dir = run_dir
            out.config_hash = config_hash(cfg)
            result = run_chain(cfg, raise_on_failure=False)
            out.status, out.config_hash = result.status, result.config_hash
            out.message = (result.message or "").splitlines()[0] if result.message else ""
            if result.status == "ok":
                out.pruned_bytes = prune_run_dir(run_dir, keep)
        except Exception as exc:  # recorded per planet; the batch goes on
            out.status, out.message = "failed", _one_line(exc)
    out.seconds = round(time.perf_counter() - t0, 2)
    out.peak_rss_mb, out.peak_rss_method = mem.peak_mb, mem.method
    out.cpu_seconds = round(_cpu_seconds() - cpu0, 2) if exclusive else None
    return asdict(out)


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads: the worker's own are a small part)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------
# progress display
# ---------------------------------------------------------------------------


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class BatchProgress:
    """Planets done / failed / running and the ETA, on ``stream``.

    On a terminal a bar is redrawn in place (at most once a second, and after
    each planet); otherwise (a log file, a pipe) each finished planet prints one
    plain line and nothing is redrawn.  Each finished planet's line carries the
    counts and the ETA either way.
    """

    def __init__(self, total: int, stream: TextIO | None = None, tty: bool | None = None, width: int = 24):
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.ok = self.failed = self.reused = self.computed = 0
        self.running: set[int] = set()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._bar_shown = False

    # -- events ---------------------------------------------------------------
    def started(self, planet_id: int) -> None:
        """A worker began ``planet_id`` (called from the client's event thread)."""
        with self._lock:
            self.running.add(planet_id)

    def reset_clock(self) -> None:
        """Start the elapsed / ETA clock (when the cluster is up)."""
        self._t0 = time.monotonic()

    def finished(self, o: PlanetOutcome) -> None:
        with self._lock:
            self.running.discard(o.planet_id)
            if o.status == "ok":
                self.ok += 1
            else:
                self.failed += 1
            if o.reused:
                self.reused += 1
            else:
                self.computed += 1
        if o.reused:
            return
        where = f" on {o.worker}" if o.worker else ""
        mem = f", peak {o.peak_rss_mb:.0f} MB" if o.peak_rss_mb is not None else ""
        secs = f" in {o.seconds:.1f} s" if o.seconds is not None else ""
        msg = f": {o.message}" if o.status != "ok" and o.message else ""
        n = self.ok + self.failed
        self.print(f"[{n:>{len(str(self.total))}}/{self.total}] planet {o.planet_id} {o.status}{secs}{where}{mem}{msg}"
                   f" | {self.counts()}")

    # -- rendering ------------------------------------------------------------
    def eta(self) -> float | None:
        remaining = self.total - self.ok - self.failed
        if remaining == 0:
            return 0.0
        if self.computed == 0:
            return None
        return (time.monotonic() - self._t0) / self.computed * remaining

    def counts(self) -> str:
        with self._lock:
            running = len(self.running)
        reused = f" ({self.reused} reused)" if self.reused else ""
        return (f"ok {self.ok}{reused}, failed {self.failed}, running {running}, "
                f"elapsed {_hms(time.monotonic() - self._t0)}, ETA {_hms(self.eta())}")

    def print(self, line: str) -> None:
        """A line of its own (the bar, if shown, is cleared first and redrawn after)."""
        if self.tty and self._bar_shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self._bar_shown = False
        if self.tty:
            self.draw(force=True)
        self.stream.flush()

    def draw(self, force: bool = False) -> None:
        """Redraw the bar (terminal only; at most once a second unless forced)."""
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 1.0:
            return
        self._last_draw = now
        done = self.ok + self.failed
        filled = int(self.width * done / self.total) if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r\x1b[K[{bar}] {done}/{self.total} | {self.counts()}")
        self.stream.flush()
        self._bar_shown = True

    def close(self) -> None:
        if self.tty and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


# ---------------------------------------------------------------------------
# summary and submission
# ---------------------------------------------------------------------------


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
    from .io import N_TARGETS

    header = next(iter(rows.values()))[0] if rows else ",".join(
        ["planet_id", *[f"wl_{i + 1}" for i in range(N_TARGETS)], *[f"sigma_{i + 1}" for i in range(N_TARGETS)]])
    body = "".join(rows[pid][1] + "\n" for pid in sorted(rows))
    atomic_write_text(out_dir / "submission.csv", header + "\n" + body)


# ---------------------------------------------------------------------------
# the batch
# ---------------------------------------------------------------------------


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

    from .config import config_hash

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

    from .config import compose_config, validate_config

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
