"""Temperature scaling of a dark-current map."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import TemperatureConfig

__all__ = ["K_BOLTZMANN_EV", "temperature_factor"]

#: Boltzmann constant (eV/K)
K_BOLTZMANN_EV = 8.617333262e-5


def temperature_factor(cfg: "TemperatureConfig") -> float:
    """Dark scale factor for the detector temperature (1 when disabled or at the reference).

    Parameters
    ----------
    cfg : TemperatureConfig
        ``method``, ``ref_temp_k``, ``detector_temp_k``, ``slope_per_k`` (1/K),
        ``activation_energy_ev`` (eV).

    Returns
    -------
    float
        Linear: ``1 + slope (T - Tref)``; Arrhenius: ``exp(-Ea/k_B (1/T - 1/Tref))``.
    """
    if not cfg.enabled or cfg.detector_temp_k is None:
        return 1.0
    t, tref = float(cfg.detector_temp_k), float(cfg.ref_temp_k)
    if cfg.method == "linear":
        return 1.0 + cfg.slope_per_k * (t - tref)
    return math.exp(-cfg.activation_energy_ev / K_BOLTZMANN_EV * (1.0 / t - 1.0 / tref))
