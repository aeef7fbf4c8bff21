"""Allocator settings for a run: keep freed memory in the process instead of handing it back at once.

A run allocates and frees the same few sizes of buffer again and again (a chunk
of frames, a decoded parquet batch, a stage's temporaries).  Handing freed pages
back to the kernel makes the next allocation fault them in again, and on the
2-core VMs this project is measured on a fresh page costs 25-35 us (the host
backs it again: 256 MB take ~2 s to first touch, 0.03 s when reused).  A
full-size AIRS-CH0 run faulted 365,000 pages with the defaults and 256,000 with
the settings below (``benchmarks/bench_science.py`` measures the whole run).

* glibc malloc (numpy's allocator): buffers up to 32 MiB come from the heap, and
  the heap is trimmed only above 1 GiB of free space at its top (the defaults
  return most freed chunk buffers at once);
* Arrow: the jemalloc pool, which keeps freed pages a few seconds
  (:func:`calib_core.io.parquet_frames.use_decode_pool`).

The settings are process-wide and applied once; an allocator variable set in
the environment (``MALLOC_*``, ``ARROW_DEFAULT_MEMORY_POOL``) is left to the user.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

__all__ = ["tune_allocators", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

log = logging.getLogger(__name__)

#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: largest heap allocation glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit)
MMAP_THRESHOLD = 32 * 2 ** 20
TRIM_THRESHOLD = 2 ** 30

_lock = threading.Lock()
_done: dict[str, str] | None = None


def tune_allocators() -> dict[str, str]:
    """Apply the settings above once per process; returns what was set (for the run log)."""
    global _done
    with _lock:
        if _done is None:
            _done = {"malloc": _tune_glibc()}
            from .io.parquet_frames import use_decode_pool

            _done["arrow_pool"] = use_decode_pool()
            log.debug("allocators: %s", _done)
        return dict(_done)


def _tune_glibc() -> str:
    if any(k.startswith("MALLOC_") for k in os.environ):
        return "left to the environment (MALLOC_* set)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):     # musl, macOS, Windows: their defaults
        return "default (not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return (f"glibc: mmap_threshold {MMAP_THRESHOLD >> 20} MiB, trim_threshold {TRIM_THRESHOLD >> 20} MiB"
            if ok else "default (mallopt refused)")
