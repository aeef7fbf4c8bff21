"""A run directory holds one run: one writer at a time, its state always says what it holds.

:func:`claim` is what :func:`calib_core.chain.run_chain` does before anything
else in a run directory:

1. take its lock (``.lock``, an advisory ``flock`` held for the whole run); a
   second writer is refused with a message naming the holder (pid, host, start,
   command) -- it never mixes its files with the first one's;
2. remove what an interrupted run left behind: temporary stage directories
   (``.<stage>.<uuid>.tmp``, their frame planes can weigh gigabytes),
   half-replaced ones (``.*.old``) and temporary files of atomic writes;
3. remove the previous run's final products (``depths.csv``,
   ``depths_calibrated.csv``, the audit files) and write ``run_state.json``
   with ``status: running``: until the run ends, nothing in the directory looks
   like a finished result (stage outputs under ``calib/`` stay: they are the
   cache, verified by checksum before reuse).

The runner then records ``ok``, ``failed`` or ``interrupted`` (Ctrl-C,
SIGTERM) in ``run_state.json``, ``qc.json``, ``run_hash_summary.json`` and
``debug_log.md``; ``depths.csv`` is written only for an ``ok`` run.  Readers
of run directories (``sigma-calibrate``, ``batch``) use :func:`run_status`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .store import atomic_write_json

__all__ = ["FINAL_PRODUCTS", "RunDirBusy", "STATE_NAME", "claim", "run_status"]

log = logging.getLogger(__name__)

STATE_NAME = "run_state.json"
LOCK_NAME = ".lock"
#: files that only a finished, successful run may leave behind
FINAL_PRODUCTS = ("depths.csv", "depths_calibrated.csv", "audit.json", "audit.html")


class RunDirBusy(RuntimeError):
    """Another process is writing the run directory."""


def run_status(run_dir: str | os.PathLike) -> str | None:
    """``ok``, ``failed``, ``interrupted`` or ``running`` as recorded by the last run (None: never run here)."""
    try:
        return json.loads((Path(run_dir) / STATE_NAME).read_text()).get("status")
    except (OSError, ValueError):
        return None


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                f"{info.get('command')}")
    except (OSError, ValueError):
        return "another process"


def _lock(lock_path: Path):
    """An open, exclusively locked file object (raises RunDirBusy when another process holds it)."""
    fh = open(lock_path, "a+")
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:                        # no flock (Windows): the lock file's pid tells
        info = _read_json(lock_path)
        if info.get("pid") not in (None, os.getpid()) and _alive(int(info["pid"])):
            fh.close()
            raise RunDirBusy(f"{lock_path.parent}: another run is writing it ({_holder(lock_path)})") from None
    except OSError:
        fh.close()
        raise RunDirBusy(f"{lock_path.parent}: another run is writing it ({_holder(lock_path)}); wait for it "
                         "to end or give another run_dir") from None
    return fh


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep(run_dir: Path) -> int:
    """Remove what an interrupted run left: temporary stage directories and files of atomic writes."""
    removed = 0
    for path in run_dir.rglob(".*"):
        name = path.name
        if name == LOCK_NAME or not (name.endswith(".tmp") or name.endswith(".old") or ".tmp." in name):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
            log.info("removed the leftover %s", path)
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def claim(run_dir: str | os.PathLike, config_hash: str) -> Iterator[Path]:
    """Hold ``run_dir`` for one run (see the module doc); yields its resolved path.

    Raises
    ------
    RunDirBusy
        Another process holds the directory.
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_NAME
    fh = _lock(lock_path)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "command": " ".join(sys.argv)[:300]}))
        fh.flush()
        _sweep(path)
        for name in FINAL_PRODUCTS:
            (path / name).unlink(missing_ok=True)
        atomic_write_json(path / STATE_NAME, {"status": "running", "config_hash": config_hash, "pid": os.getpid(),
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        yield path
    finally:
        fh.close()                              # releases the flock
