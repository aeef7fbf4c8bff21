"""SpectraMind calibration engine for Ariel (NeurIPS 2025 Ariel Data Challenge) frames.

The small public API::

    from calib_core import compose_config, run_chain, open_planet, make_demo

    root = make_demo("data/demo", seed=0)                       # a planet with ground truth
    cfg = compose_config("calib/nominal", [f"data.root={root}", "calib.phase.binning.nbins=150"])
    result = run_chain(cfg)                                      # writes run_dir (see README)
    result.output("depths").fields["mu"]                         # the 283 transit depths
    result.diagnostics("cds", "AIRS-CH0")                        # plot data of one stage

Stages live in :mod:`calib_core.stages` (one module each), the data layer in
:mod:`calib_core.io`, sigma calibration in :mod:`calib_core.sigma`.
"""

from .chain import RunResult, run_chain
from .config import ConfigError, compose_config, config_hash, config_to_yaml
from .io import DataLayoutError, list_planets, open_planet
from .io.demo import ensure_demo, make_demo

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
