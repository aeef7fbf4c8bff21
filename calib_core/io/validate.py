"""Validate every input of a planet visit before anything is computed.

:func:`validate_planet` is called by :func:`calib_core.chain.run_chain` right
after the planet is opened, for every instrument of the run.  It reads all
metadata, every calibration map and the time axes, checks that they are
possible and agree with each other, and checks the structure of every signal
file from its parquet metadata (every column chunk inside the file, row
counts, statistics when written), so that a bad input is reported before the
first stage runs, never as a bare ``IndexError`` or ``OSError``.  Damage inside
a compressed page can only be seen by decoding it: the streaming reader then
stops the run with the same kind of one-line error naming the file and row.

Every failure is a :class:`~calib_core.io.layout.DataLayoutError` with one
line ``<file>: <what is wrong>; expected <what>`` naming the file, the
column or key and the value.

What is checked (ranges from ``ariel_data.md`` sections 1.x):

* ``adc_info`` (or the 2024 ``<split>_adc_info.csv``): a text CSV, gain > 0 and
  finite, offset finite, for each instrument of the run;
* ``wavelengths.csv``: one row of 283 finite positive values, wl_1 in the FGS1
  band, wl_2..wl_283 equal to the AIRS-CH0 crop of ``AIRS-CH0-axis2-um``
  reversed (when AIRS-CH0 is run);
* ``<split>_star_info.csv`` and the labels file, when present: every row has
  one field per column and an integer planet id; the planet's values are
  physically possible (:data:`calib_core.io.planet.STAR_INFO_BOUNDS`), depths in
  [0, 1);
* signal files: readable footer, integer columns, frame shape, an even number
  of frames (read pairs), equal to the non-NaN rows of the instrument's time
  column in ``axis_info``; every column chunk inside the file's data region
  with its row group's row count; statistics (when written): no nulls, values
  within uint16;
* calibration maps: shapes, dtypes, finite values, read noise >= 0;
* time axes: no NaN hole, strictly increasing, hours since the visit start (the
  first read within the first hour; the visit, last read plus one pair period,
  1-24 h long: 7.5 h in the real data, so times in seconds or minutes are
  refused); pairs not closer than at full size (AIRS-CH0 4.8 s, FGS1 0.4 s);
  FGS1 and AIRS-CH0 covering the same visit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .layout import AIRS_CROP, FULL_FRAMES, INSTRUMENTS, N_TARGETS, DataLayoutError
from .parquet_frames import file_metadata
from .planet import Planet

__all__ = ["ValidationReport", "validate_planet", "VISIT_HOURS", "MAX_FIRST_READ_H", "FULL_PAIR_PERIOD_S",
           "FGS1_BAND_UM", "WAVELENGTH_TOL_UM"]

log = logging.getLogger(__name__)

VISIT_HOURS = (1.0, 24.0)          #: plausible visit length in hours (real: 7.5 h)
MAX_FIRST_READ_H = 1.0             #: the first read comes within this many hours of the visit start (real: 0.1 s)
#: read-pair period at full size (ariel_data.md 1.4); a visit never has pairs closer than this
FULL_PAIR_PERIOD_S = {"AIRS-CH0": 4.8, "FGS1": 0.4}
FGS1_BAND_UM = (0.5, 1.0)          #: wl_1 (FGS1 broadband, 0.60-0.80 um, 0.7 in the data)
WAVELENGTH_TOL_UM = 1e-4           #: wavelengths.csv vs AIRS-CH0-axis2-um (equal to 6 decimals in the real data)
UINT16_MAX = 65535


@dataclass
class ValidationReport:
    """What :func:`validate_planet` checked and how long it took."""

    planet_id: int
    instruments: list[str]
    seconds: float = 0.0
    scan_seconds: dict[str, float] = field(default_factory=dict)   #: signal file -> structure check seconds
    frames: dict[str, int] = field(default_factory=dict)            #: instrument -> frames
    visit_hours: dict[str, float] = field(default_factory=dict)     #: instrument -> visit extent (h)


def _time_axis(planet: Planet, inst: str, n: int) -> tuple[float, float, float]:
    """Check the unit and cadence of ``inst``'s time column; return (first h, visit extent h, pair period s)."""
    path = planet.root / "axis_info.parquet"
    col = f"{inst}-axis0-h"
    t = planet.axis(inst).time_s / 3600.0       # axis() checked counts, NaN holes and order
    first, last = float(t[0]), float(t[-1])
    pair_starts = t[0::2]
    period_h = float(np.median(np.diff(pair_starts))) if pair_starts.size > 1 else last - first
    extent = last + period_h
    hint = (f"{col!r} runs {first:.6g} .. {last:.6g} over {n} frames")
    if not 0 <= first < MAX_FIRST_READ_H:
        raise DataLayoutError(f"{path}: column {hint}, first read at {first:.6g} h; expected hours since the "
                              f"visit start (first read within {MAX_FIRST_READ_H:g} h; 0.1 s in the real data)")
    lo, hi = VISIT_HOURS
    if not lo <= extent <= hi:
        guesses = (("seconds", 1 / 3600), ("minutes", 1 / 60), ("days", 24.0))
        unit = next((f" - {name} instead of hours?" for name, factor in guesses if lo <= extent * factor <= hi), "")
        raise DataLayoutError(f"{path}: column {hint}, a visit of {extent:.6g} h{unit}; expected hours since the "
                              f"visit start and a visit of {lo:g}-{hi:g} h (7.5 h in the real data)")
    period_s = period_h * 3600.0
    full = FULL_PAIR_PERIOD_S[inst]
    if period_s < full * (1 - 1e-3):
        raise DataLayoutError(f"{path}: column {col!r}: read pairs {period_s:.6g} s apart ({n // 2} pairs in "
                              f"{extent:.4g} h); expected pairs at least {full:g} s apart ({FULL_FRAMES[inst] // 2} "
                              f"pairs in a 7.5 h visit at full size)")
    gap = t[1::2] - t[0::2]
    wide = np.flatnonzero(gap >= period_h)
    if wide.size:
        k = int(wide[0])
        raise DataLayoutError(f"{path}: column {col!r}: the two reads of pair {k} (rows {2 * k}, {2 * k + 1}) are "
                              f"{gap[k] * 3600:.6g} s apart, as far as pairs are; expected the reads of a pair "
                              f"closer together than consecutive pairs")
    return first, extent, period_s


def _check_wavelengths(planet: Planet, run_airs: bool) -> None:
    wl = planet.wavelengths()                  # finite, positive, AIRS part increasing
    path = planet.root / "wavelengths.csv"
    lo, hi = FGS1_BAND_UM
    if not lo <= wl[0] <= hi:
        raise DataLayoutError(f"{path}: wl_1 = {float(wl[0])!r} um; expected the FGS1 wavelength in "
                              f"[{lo:g}, {hi:g}] um (0.7 in the real data)")
    if not run_airs:
        return
    axis_um = planet.axis("AIRS-CH0").wavelength_um
    a, b = AIRS_CROP
    expected = axis_um[a:b][::-1]
    diff = np.abs(wl[1:] - expected)
    bad = np.flatnonzero(~(diff <= WAVELENGTH_TOL_UM))
    if bad.size:
        j = int(bad[0])
        raise DataLayoutError(f"{path}: wl_{j + 2} = {float(wl[j + 1])!r} um but 'AIRS-CH0-axis2-um' of "
                              f"axis_info.parquet gives {float(expected[j])!r} um for its detector column "
                              f"{b - 1 - j}; expected "
                              f"wl_2..wl_{N_TARGETS} = AIRS-CH0-axis2-um[{a}:{b}] reversed "
                              f"(within {WAVELENGTH_TOL_UM:g} um)")


def _check_signal_structure(path) -> None:
    """Every column chunk inside the data region with its row group's rows; statistics within uint16.

    Reads the footer only (0.2-0.5 s for a full-size AIRS-CH0 file's 250,000 column chunks).
    """
    md = file_metadata(path)
    with open(path, "rb") as fh:           # the file ends with the footer's length and b"PAR1"
        fh.seek(-8, 2)
        data_end = fh.tell() - int.from_bytes(fh.read(4), "little")
    total_rows = 0
    lo, hi, nulls = None, None, 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        total_rows += rg.num_rows
        for c in range(rg.num_columns):
            col = rg.column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            if start < 4 or start + col.total_compressed_size > data_end or col.num_values != rg.num_rows:
                end = start + col.total_compressed_size
                raise DataLayoutError(f"{path}: row group {g} column {c} spans bytes {start}..{end} with "
                                      f"{col.num_values} values; expected {rg.num_rows} values inside the data "
                                      f"region (4..{data_end}): a truncated or damaged parquet file")
            st = col.statistics
            if st is not None:
                nulls += st.null_count or 0
                if st.has_min_max:
                    lo = st.min if lo is None else min(lo, st.min)
                    hi = st.max if hi is None else max(hi, st.max)
    if total_rows != md.num_rows:
        raise DataLayoutError(f"{path}: row groups hold {total_rows} rows, the footer says {md.num_rows}; "
                              f"expected an intact parquet file")
    if nulls:
        raise DataLayoutError(f"{path}: {nulls} null values per the statistics; "
                              f"expected a value for every pixel of every frame")
    if lo is not None and (lo < 0 or hi > UINT16_MAX):
        raise DataLayoutError(f"{path}: values {lo} .. {hi} per the statistics; "
                              f"expected uint16 ADC counts in 0 .. {UINT16_MAX}")


def validate_planet(planet: Planet, instruments: Sequence[str] = INSTRUMENTS) -> ValidationReport:
    """Check every input the run of ``instruments`` on ``planet`` will read (see the module docstring).

    Every check of every instrument runs before any stage, so a fault in
    AIRS-CH0's files is reported before FGS1 is processed.

    Parameters
    ----------
    planet : Planet
        An opened planet visit.
    instruments : sequence of str
        The instruments of the run.

    Returns
    -------
    ValidationReport

    Raises
    ------
    DataLayoutError
        The first problem found, in one line naming the file, key and value.
    """
    t0 = time.perf_counter()
    instruments = list(instruments)
    unknown = [i for i in instruments if i not in INSTRUMENTS]
    if unknown:
        raise ValueError(f"unknown instrument {unknown[0]!r}; expected one of {INSTRUMENTS}")
    report = ValidationReport(planet.planet_id, instruments)

    # dataset-level metadata
    for inst in instruments:
        planet.adc(inst)
    planet.star_info()
    planet.labels()

    # per instrument: signal layout, calibration maps, time axis
    axes = {}
    for inst in instruments:
        n = planet.n_frames(inst)
        signal = planet.signal_path(inst)
        if n < 2 or n % 2:
            raise DataLayoutError(f"{signal}: {n} frames; expected an even number >= 2 (reads come in pairs)")
        report.frames[inst] = n
        planet.calibration(inst)
        axes[inst] = _time_axis(planet, inst, n)
        report.visit_hours[inst] = axes[inst][1]
    if len(axes) == 2:
        (f_first, f_ext, f_period), (a_first, a_ext, a_period) = axes["FGS1"], axes["AIRS-CH0"]
        tol = max(0.01 * max(f_ext, a_ext), 2 * max(f_period, a_period) / 3600.0)
        if abs(f_ext - a_ext) > tol or abs(f_first - a_first) > tol:
            raise DataLayoutError(
                f"{planet.root / 'axis_info.parquet'}: 'FGS1-axis0-h' covers {f_first:.6g} .. {f_ext:.6g} h but "
                f"'AIRS-CH0-axis0-h' covers {a_first:.6g} .. {a_ext:.6g} h ({report.frames['FGS1']} and "
                f"{report.frames['AIRS-CH0']} frames); expected both instruments to span the same visit "
                f"(within {tol:.3g} h)")
    _check_wavelengths(planet, "AIRS-CH0" in instruments)

    # the structure of every signal file, from its footer
    for inst in instruments:
        path = planet.signal_path(inst)
        t_scan = time.perf_counter()
        _check_signal_structure(path)
        report.scan_seconds[str(path)] = round(time.perf_counter() - t_scan, 3)
    report.seconds = round(time.perf_counter() - t0, 3)
    log.info("validated planet %s (%s) in %.2f s (signal scans %s)", planet.planet_id, ", ".join(instruments),
             report.seconds, ", ".join(f"{s:.2f} s" for s in report.scan_seconds.values()))
    return report
