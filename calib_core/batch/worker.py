"""One planet of a batch, as a Dask task on a worker: run the chain, measure it, prune its run directory."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from .rundirs import prune_run_dir

__all__ = ["PlanetOutcome"]


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

    from ..chain import run_chain
    from ..config import config_hash

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
