"""Time axes of a visit: hours since the visit start <-> BJD_TDB, MJD and UNIX.

Every series stage stores ``time_s``, seconds since the start of the visit.
Absolute time stamps need the start epoch (``calib.phase.time.start_epoch``,
an ISO 8601 UTC string); conversions go through :class:`astropy.time.Time`,
so leap seconds and the UTC -> TDB scale change are handled by astropy.

Units (:data:`TIME_UNITS`)
--------------------------
``hours_since_start``
    Elapsed SI hours since the start epoch (no epoch needed).
``bjd_tdb``
    Julian date in the TDB scale.  No sky position or observatory is known,
    so **the visit time stamps are taken as already barycentric**: only the
    time-scale change UTC -> TDB is applied, no light-travel-time (Roemer)
    correction.  Ariel time stamps would be barycentred upstream.
``mjd``
    Modified Julian date in the UTC scale.
``unix``
    POSIX seconds since 1970-01-01T00:00:00 UTC (astropy ``unix`` format).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from astropy.time import Time

# astropy is imported inside the conversions: the config schemas import only the unit names (TIME_UNITS)

__all__ = [
    "TIME_UNITS",
    "ABSOLUTE_UNITS",
    "check_epoch",
    "parse_epoch",
    "hours_to_unit",
    "unit_to_hours",
    "unit_label",
]

#: accepted time units of ``calib.phase.time.unit`` and ``calib.phase.ephemeris.t0_unit``
TIME_UNITS = ("hours_since_start", "bjd_tdb", "mjd", "unix")
#: units that need the visit start epoch
ABSOLUTE_UNITS = ("bjd_tdb", "mjd", "unix")

_LABELS = {"hours_since_start": "h since visit start", "bjd_tdb": "BJD_TDB (d)", "mjd": "MJD (UTC, d)",
           "unix": "UNIX time (s)"}


#: what :func:`parse_epoch` reads: astropy's ``iso`` / ``isot`` (date; date and hours:minutes; with seconds)
_EPOCH = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")


def check_epoch(start_epoch: Any) -> None:
    """Raise ValueError unless ``start_epoch`` is a date-time :func:`parse_epoch` reads (no astropy needed).

    Used by the config schema, which must validate without importing numerics.
    """
    if not isinstance(start_epoch, str) or not _EPOCH.match(start_epoch):
        raise ValueError(f"expected YYYY-MM-DD[THH:MM[:SS[.fff]]], got {start_epoch!r}")
    try:
        datetime.fromisoformat(start_epoch.replace(" ", "T"))
    except ValueError as exc:
        raise ValueError(f"{start_epoch!r}: {exc}") from None


def parse_epoch(start_epoch: str) -> "Time":
    """The visit start as an astropy :class:`~astropy.time.Time` in the UTC scale.

    Parameters
    ----------
    start_epoch : str
        ISO 8601 date-time in UTC, e.g. ``"2025-03-01T00:00:00"``.

    Raises
    ------
    ValueError
        When the string is not an ISO/ISOT date-time.
    """
    from astropy.time import Time

    if not isinstance(start_epoch, str):
        raise ValueError(f"start epoch must be an ISO 8601 UTC string, got {start_epoch!r}")
    return Time(start_epoch, scale="utc", format="isot" if "T" in start_epoch else "iso")


def _check_unit(unit: str, start_epoch: str | None) -> None:
    if unit not in TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r}; allowed: {', '.join(TIME_UNITS)}")
    if unit in ABSOLUTE_UNITS and start_epoch is None:
        raise ValueError(f"time unit {unit!r} needs the visit start epoch")


def hours_to_unit(hours: np.ndarray | float, unit: str, start_epoch: str | None = None) -> np.ndarray:
    """Convert hours since the visit start to ``unit``.

    Parameters
    ----------
    hours : array_like
        Elapsed time since the start epoch, SI hours.
    unit : str
        One of :data:`TIME_UNITS`.
    start_epoch : str, optional
        ISO 8601 UTC start of the visit; required for the absolute units.

    Returns
    -------
    numpy.ndarray
        float64 values: hours, BJD_TDB days, MJD(UTC) days or UNIX seconds.
    """
    _check_unit(unit, start_epoch)
    hours = np.asarray(hours, dtype=np.float64)
    if unit == "hours_since_start":
        return hours.copy()
    from astropy.time import TimeDelta

    t = parse_epoch(start_epoch) + TimeDelta(hours * 3600.0, format="sec")
    if unit == "bjd_tdb":
        return np.asarray(t.tdb.jd, dtype=np.float64)
    if unit == "mjd":
        return np.asarray(t.utc.mjd, dtype=np.float64)
    return np.asarray(t.unix, dtype=np.float64)


def unit_to_hours(values: np.ndarray | float, unit: str, start_epoch: str | None = None) -> np.ndarray:
    """Convert time stamps in ``unit`` to hours since the visit start (inverse of :func:`hours_to_unit`).

    Parameters
    ----------
    values : array_like
        Time stamps in ``unit`` (hours, BJD_TDB days, MJD(UTC) days or UNIX seconds).
    unit : str
        One of :data:`TIME_UNITS`.
    start_epoch : str, optional
        ISO 8601 UTC start of the visit; required for the absolute units.

    Returns
    -------
    numpy.ndarray
        float64 elapsed SI hours since the start epoch.
    """
    _check_unit(unit, start_epoch)
    values = np.asarray(values, dtype=np.float64)
    if unit == "hours_since_start":
        return values.copy()
    from astropy import units as u
    from astropy.time import Time

    if unit == "bjd_tdb":
        t = Time(values, format="jd", scale="tdb")
    elif unit == "mjd":
        t = Time(values, format="mjd", scale="utc")
    else:
        t = Time(values, format="unix", scale="utc")
    return np.asarray((t - parse_epoch(start_epoch)).to_value(u.hour), dtype=np.float64)


def unit_label(unit: str) -> str:
    """Axis label of a time unit (for plots and meta)."""
    if unit not in TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r}; allowed: {', '.join(TIME_UNITS)}")
    return _LABELS[unit]
