"""Produce the items of an iterator ahead, in a background thread.

Used where the work behind each item releases the GIL -- parquet decoding
(:mod:`calib_core.io.parquet_frames`) and the compiled stage kernels of a streamed
ADC -> Dark -> Flat chain (:class:`calib_core.frames.StreamedSource`) -- so
that it runs on the other core while the caller works on the previous item.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

__all__ = ["prefetched"]


def prefetched(items: Iterable[Any], depth: int = 1, name: str = "prefetch") -> Iterator[Any]:
    """Iterate ``items`` produced ahead in a background thread (at most ``depth`` waiting).

    Items come in order, each produced once, exactly as iterating ``items``
    would give them.  Exceptions reach the caller at the item where they
    happened; closing the iterator early stops the producer (after the item it
    is working on).

    Parameters
    ----------
    items : iterable
        Consumed only by the background thread.
    depth : int
        Items produced and waiting at most (memory: ``depth + 1`` items in flight).
    name : str
        Thread name (shows in debuggers and profiles).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((done, exc))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
