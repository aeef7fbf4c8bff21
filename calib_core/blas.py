"""Single-threaded BLAS while a chain runs, so that results do not depend on the caller's thread pools.

A multi-threaded BLAS splits reductions differently for different thread counts,
so a least-squares solve can change in its last bits (measured: depths moved by
~1e-10 sigma between 1 and 2 OpenBLAS threads), and a run would then not
reproduce byte for byte in another process (a Dask worker limits its BLAS to one
thread; a notebook does not).  The chain's matrices are small (the parallel work
is in the streamed kernels), so one BLAS thread costs nothing measurable.

The limit is process-wide (it is BLAS's own setting): concurrent runs share one
limit, taken by the first and given back by the last.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

__all__ = ["single_threaded_blas"]

_lock = threading.Lock()
_holders = 0
_limits: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread for the duration (re-entrant and shared between threads)."""
    global _holders, _limits
    import numpy  # noqa: F401 -- threadpoolctl limits only the BLAS libraries loaded when it is called:
    import scipy.linalg  # noqa: F401 -- numpy's and scipy's own OpenBLAS builds
    from threadpoolctl import threadpool_limits

    with _lock:
        if _holders == 0:
            _limits = threadpool_limits(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _limits is not None:
                _limits.restore_original_limits()
                _limits = None
