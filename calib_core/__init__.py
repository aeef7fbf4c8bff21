"""SpectraMind calibration engine for Ariel (NeurIPS 2025 Ariel Data Challenge) frames.

The small public API::

    from calib_core import compose_config, run_chain, open_planet, make_demo

    root = make_demo("data/demo", seed=0)                       # a planet with ground truth
    cfg = compose_config("calib/nominal", [f"data.root={root}", "calib.phase.binning.nbins=150"])
    result = run_chain(cfg)                                      # writes run_dir (see README)
    result.output("depths").fields["mu"]                         # the 283 transit depths
    result.diagnostics("cds", "AIRS-CH0")                        # plot data of one stage

Stages live in :mod:`calib_core.stages` (one package each), the data layer in
:mod:`calib_core.io`, the demo simulator in :mod:`calib_core.sim`, sigma calibration in
:mod:`calib_core.sigma`; the layers are drawn in ``configs/calib/architecture.md``.  Importing
the package imports nothing else: each name is loaded on first use, so composing a profile
pulls in no numerics.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "RunResult": "chain", "run_chain": "chain",
    "ConfigError": "config", "compose_config": "config", "config_hash": "config", "config_to_yaml": "config",
    "DataLayoutError": "io", "list_planets": "io", "open_planet": "io",
    "ensure_demo": "sim", "make_demo": "sim",
}

__all__ = [
    "ConfigError",
    "DataLayoutError",
    "RunResult",
    "compose_config",
    "config_hash",
    "config_to_yaml",
    "ensure_demo",
    "list_planets",
    "make_demo",
    "open_planet",
    "run_chain",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
