"""Stage registry: one module per stage, each exporting ``STAGE`` (a :class:`~calib_core.stages.base.Stage`).

The canonical execution order is :data:`STAGE_NAMES`; a profile lists the
stages it runs (a subset, in this order) in its defaults list.
"""

from __future__ import annotations

import importlib

from .base import Gate, QCError, Stage, StageContext

__all__ = ["STAGE_NAMES", "Gate", "QCError", "Stage", "StageContext", "get_stage"]

#: every stage the engine knows, in canonical execution order
STAGE_NAMES = ("adc", "dark", "flat", "cds", "photometry", "trace", "phase", "depths", "top_level_calib")


def get_stage(name: str) -> Stage:
    """The stage object registered under ``name``."""
    if name not in STAGE_NAMES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").STAGE
