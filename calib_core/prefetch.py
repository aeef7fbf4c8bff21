"""Produce the items of an iterator ahead, in a background thread.

Used where the work behind each item releases the GIL -- parquet decoding
(:mod:`calib_core.io.parquet_frames`) and the compiled stage kernels of a streamed
ADC -> Dark -> Flat chain (:class:`calib_core.frames.StreamedSource`) -- so
that it runs on the other core while the caller works on the previous item.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator

__all__ = ["in_order_threads", "prefetched"]


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


def in_order_threads(fn: Callable[..., Any], items: Iterable[tuple], threads: int) -> Iterator[tuple[tuple, Any]]:
    """``(args, fn(*args))`` for each ``args`` of ``items``, in order, computed by up to ``threads`` threads.

    At most ``threads`` calls are in flight (memory: that many results).  For
    work that releases the GIL (NumPy, compiled kernels) on independent
    inputs: every result is the one a plain loop gives.  An exception reaches
    the caller at its item; the calls already submitted (at most ``threads - 1``
    after it) finish first, and no further call is submitted.
    """
    if threads <= 1:
        for args in items:
            yield args, fn(*args)
        return
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="in-order") as pool:
        try:
            for args in items:
                pending.append((args, pool.submit(fn, *args)))
                if len(pending) >= threads:
                    done_args, fut = pending.popleft()
                    yield done_args, fut.result()
            while pending:
                done_args, fut = pending.popleft()
                yield done_args, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()
