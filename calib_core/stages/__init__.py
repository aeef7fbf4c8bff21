"""Stage registry: one package per stage, ``calib_core/stages/<name>/``.

Each package has three layers, imported only as far as needed:

* ``__init__.py``: its :class:`~calib_core.stages.info.StageInfo` (``INFO``), no numerics;
* ``config.py``: its typed config schema (``Config``), no numerics -- composing and
  validating a profile imports these two only;
* ``step.py``: the stage itself (``STAGE``, a :class:`calib_core.stages.base.Stage`), a thin
  adapter over the algorithm modules beside it.

The canonical execution order is :data:`STAGE_NAMES`; a profile lists the
stages it runs (a subset, in this order) in its defaults list.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .base import Stage
    from .info import StageInfo

__all__ = ["STAGE_NAMES", "get_stage", "stage_info", "stage_schema"]

#: every stage the engine knows, in canonical execution order
STAGE_NAMES = ("adc", "dark", "flat", "cds", "photometry", "trace", "phase", "depths", "top_level_calib")


def _package(name: str) -> str:
    if name not in STAGE_NAMES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")
    return f"{__name__}.{name}"


def stage_info(name: str) -> "StageInfo":
    """The static description of stage ``name`` (imports no numerics)."""
    return importlib.import_module(_package(name)).INFO


def stage_schema(name: str) -> type:
    """The config dataclass of stage ``name`` (imports no numerics)."""
    return importlib.import_module(_package(name) + ".config").Config


def get_stage(name: str) -> "Stage":
    """The stage object registered under ``name`` (imports its numerics)."""
    return importlib.import_module(_package(name) + ".step").STAGE


def __getattr__(name: str) -> Any:
    # the stage protocol's names, for ``from calib_core.stages import QCError`` and the like
    if name in ("Gate", "QCError", "Stage", "StageContext"):
        return getattr(importlib.import_module(f"{__name__}.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
