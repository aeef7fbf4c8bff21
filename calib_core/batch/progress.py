"""The progress of a batch on the terminal: a bar redrawn in place, or one line per planet."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .worker import PlanetOutcome

__all__ = ["BatchProgress"]


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
