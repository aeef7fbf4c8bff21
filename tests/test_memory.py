"""Allocator settings of a run: applied once, reported, and the decode pool keeps Arrow's reads exact."""

from __future__ import annotations

import pyarrow as pa

from calib_core.memory import tune_allocators


def test_allocators_are_tuned_once_and_say_how():
    first = tune_allocators()
    assert set(first) == {"malloc", "arrow_pool"}
    assert first["arrow_pool"] == pa.default_memory_pool().backend_name
    assert tune_allocators() == first                    # idempotent, process-wide
