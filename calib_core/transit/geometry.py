"""Circular-orbit transit geometry: contact times, durations and their inversion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry", "transit_durations", "geometry_from_durations"]


@dataclass(frozen=True)
class Geometry:
    """Circular-orbit transit geometry.

    Attributes
    ----------
    t0_h : float
        Mid-transit time, hours since the visit start.
    period_d : float
        Orbital period, days.
    a_rs : float
        Semi-major axis in stellar radii.
    inc_deg : float
        Orbital inclination, degrees.
    """

    t0_h: float
    period_d: float
    a_rs: float
    inc_deg: float

    @property
    def impact_parameter(self) -> float:
        """Sky-projected impact parameter ``b = a cos i`` (stellar radii)."""
        return self.a_rs * math.cos(math.radians(self.inc_deg))

    def contact_times(self, k: float) -> np.ndarray:
        """Contact times t1..t4 in hours since the visit start for radius ratio ``k``.

        A grazing transit (no second/third contact) has ``t2 = t3 = t0``.
        """
        t14, t23 = transit_durations(self.period_d, self.a_rs, self.inc_deg, k)
        return np.array([self.t0_h - t14 / 2, self.t0_h - t23 / 2, self.t0_h + t23 / 2, self.t0_h + t14 / 2])


def transit_durations(period_d: float, a_rs: float, inc_deg: float, k: float) -> tuple[float, float]:
    """Total (T14) and full (T23) transit durations in hours, circular orbit (Winn 2010, eqs. 14-15).

    Parameters
    ----------
    period_d : float
        Period, days.
    a_rs : float
        Semi-major axis / stellar radius.
    inc_deg : float
        Inclination, degrees.
    k : float
        Radius ratio Rp/Rs.

    Returns
    -------
    (float, float)
        T14 and T23 in hours; 0 when the planet does not transit (T14) or the
        transit is grazing (T23).
    """
    inc = math.radians(inc_deg)
    b = a_rs * math.cos(inc)
    scale = period_d * 24.0 / math.pi

    def duration(r: float) -> float:
        arg = math.sqrt(max(r * r - b * b, 0.0)) / (a_rs * math.sin(inc))
        return scale * math.asin(min(arg, 1.0))

    return duration(1.0 + k), duration(1.0 - k)


def geometry_from_durations(t14_h: float, t23_h: float, depth: float, period_d: float) -> tuple[float, float]:
    """Invert the durations into ``(a_rs, inc_deg)`` (Seager & Mallen-Ornelas 2003, circular orbit).

    Parameters
    ----------
    t14_h, t23_h : float
        Total and full durations, hours (``t23_h`` is clipped into ``[0, 0.95 t14_h]``).
    depth : float
        ``(Rp/Rs)**2``.
    period_d : float
        Period, days.

    Returns
    -------
    (float, float)
        Semi-major axis in stellar radii and inclination in degrees (impact
        parameter clipped into ``[0, 1]``).
    """
    k = math.sqrt(max(depth, 1e-8))
    phase14 = math.pi * t14_h / (24.0 * period_d)
    phase23 = math.pi * min(max(t23_h, 0.0), 0.95 * t14_h) / (24.0 * period_d)
    s14, s23 = math.sin(phase14) ** 2, math.sin(phase23) ** 2
    b2 = ((1 - k) ** 2 - s23 / s14 * (1 + k) ** 2) / (1 - s23 / s14)
    b2 = min(max(b2, 0.0), 1.0)
    a_rs = math.sqrt(((1 + k) ** 2 - b2 * (1 - s14)) / s14)
    return a_rs, math.degrees(math.acos(math.sqrt(b2) / a_rs))
