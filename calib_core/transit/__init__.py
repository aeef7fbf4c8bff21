"""Transit models shared by the series stages (trace, phase, depths).

Conventions
-----------
* Times are **hours since the visit start** (``time_s / 3600``) unless a name
  says otherwise; periods are in days (as in ``train_star_info.csv``).
* Orbits are circular (the challenge's ``e`` is always 0).
* Depth means ``(Rp/Rs)**2`` (the challenge label), not the maximum flux drop.

Modules: :mod:`.geometry` (orbit, contact times, durations), :mod:`.search`
(the transit in a white-light curve, its window), :mod:`.averaging` (time
bins, red-noise beta) and :mod:`.model` (the batman wrapper and the exact
linear form of quadratic limb darkening).  Their public names are importable
from here.
"""

from .averaging import red_noise_beta, time_bin
from .geometry import Geometry, geometry_from_durations, transit_durations
from .model import LD_FLUX_WEIGHTS, deficit_basis, ld_direction, ld_from_beta, light_curve, supersample_factor
from .search import MIN_TRANSIT_SAMPLES, TransitEstimate, box_search, estimate_transit, window_mask

__all__ = [
    "LD_FLUX_WEIGHTS",
    "Geometry",
    "MIN_TRANSIT_SAMPLES",
    "TransitEstimate",
    "transit_durations",
    "geometry_from_durations",
    "time_bin",
    "box_search",
    "estimate_transit",
    "window_mask",
    "supersample_factor",
    "deficit_basis",
    "ld_direction",
    "ld_from_beta",
    "light_curve",
    "red_noise_beta",
]
