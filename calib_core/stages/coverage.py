"""Does a visit hold a transit with an out-of-transit baseline?  Named causes for the visits that do not.

The trace stage locates the transit and normalises every channel by its
out-of-transit frames; everything after it (phase, depths) needs those frames.
Two degenerate visits would otherwise surface as a bare numerical error far
downstream (a singular baseline fit, "0 usable samples"), or worse, as a run
that ends ``ok`` with depths fitted to noise:

* :func:`check_visit_span` -- the visit is shorter than the transit itself
  (e.g. its frames end before the transit): T14 of the star-info orbit (its
  lower bound, for a vanishing planet) is at least the visit's span, so no
  placement of the transit leaves a baseline;
* :func:`check_baseline` -- the transit window the stage used leaves no
  out-of-transit frame (the transit covers the whole visit), or lies entirely
  outside the visit (a wrong ephemeris: no transit in the data).

Both raise :class:`~calib_core.stages.errors.DataError`; the runner shows it as
``trace/<instrument>: <cause>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..transit import transit_durations
from .errors import DataError

__all__ = ["MIN_OOT_FRAMES", "check_baseline", "check_visit_span"]

#: out-of-transit frames below which no baseline (level and trend) can be fitted
MIN_OOT_FRAMES = 3


def _span_h(time_h: np.ndarray) -> tuple[float, float]:
    t = time_h[np.isfinite(time_h)]
    return (float(t.min()), float(t.max())) if t.size else (0.0, 0.0)


def check_visit_span(time_s: np.ndarray, planet: Any) -> None:
    """Refuse a visit shorter than the star-info transit (no baseline can exist); no-op without star info."""
    try:
        info = planet.star_info() if planet is not None else None
    except Exception:  # noqa: BLE001 -- star info was validated before the run; a direct user may lack it
        info = None
    if not info or not all(k in info for k in ("P", "sma", "i")):
        return
    t14, _ = transit_durations(float(info["P"]), float(info["sma"]), float(info["i"]), 0.0)
    first, last = _span_h(np.asarray(time_s, np.float64) / 3600.0)
    if t14 > 0 and last - first <= t14:
        raise DataError(f"the visit's frames span {first:.2f} .. {last:.2f} h ({last - first:.2f} h) but the transit "
                        f"of the star-info orbit (P = {float(info['P']):g} d, sma = {float(info['sma']):g}, "
                        f"i = {float(info['i']):g} deg) lasts at least {t14:.2f} h: the visit cannot cover the "
                        f"transit with an out-of-transit baseline (frames missing from the signal and axis_info?)")


def check_baseline(time_s: np.ndarray, oot: np.ndarray, window_h: tuple[float, float], method: str) -> None:
    """Refuse a transit window without out-of-transit frames, or one that misses the visit altogether."""
    time_h = np.asarray(time_s, np.float64) / 3600.0
    first, last = _span_h(time_h)
    t1, t4 = (float(v) for v in window_h)
    n_oot, n = int(np.count_nonzero(oot)), int(oot.size)
    where = f"the transit window {t1:.2f} .. {t4:.2f} h ({method})"
    if t4 < first or t1 > last:
        raise DataError(f"{where} lies outside the visit's frames ({first:.2f} .. {last:.2f} h): the visit does "
                        "not cover the transit (check calib.phase.ephemeris.t0 and its unit)")
    if n_oot < MIN_OOT_FRAMES:
        raise DataError(f"no out-of-transit baseline: {where}, padded by calib.trace.transit_mask.pad_frac, "
                        f"leaves {n_oot} of {n} frames outside the transit (the visit spans {first:.2f} .. "
                        f"{last:.2f} h); expected at least {MIN_OOT_FRAMES} frames before or after the transit "
                        "(a transit longer than the visit?)")
