"""The small CSV tables of the layout (labels, star info, ADC info, wavelengths): strict parsing, named faults."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .layout import N_TARGETS, DataLayoutError

__all__ = ["CsvRow", "read_csv", "column_index", "to_float", "parse_planet_id", "planet_row", "target_vector"]

_MAX_CSV_BYTES = 512 << 20  # the largest real CSV (train.csv, 1100 x 284) is ~6 MB


class CsvRow(list):
    """One CSV data row (a list of strings) that knows its line number in the file."""

    line: int = 0


def read_csv(path: Path) -> tuple[list[str], list[CsvRow]]:
    """Read a small CSV file into its header and rows of strings.

    Every failure is a :class:`DataLayoutError` naming the file: unreadable, binary or
    non-UTF-8 content, malformed quoting, duplicate header names, or a row whose number
    of fields differs from the header's (named by its line number).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise DataLayoutError(f"{path}: cannot be read ({exc.strerror or exc}); expected a readable CSV file") from None
    if len(raw) > _MAX_CSV_BYTES:
        raise DataLayoutError(f"{path}: larger than {_MAX_CSV_BYTES >> 20} MB; expected a small CSV table")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataLayoutError(f"{path}: binary content (NUL byte at offset {nul}); expected a text CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataLayoutError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                              f"expected a text CSV file") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataLayoutError(f"{path}: empty file; expected a header row")
        header = [h.strip() for h in header]
        rows: list[CsvRow] = []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            row = CsvRow(fields)
            row.line = reader.line_num
            if len(row) != len(header):
                raise DataLayoutError(f"{path}: line {row.line} has {len(row)} fields; expected {len(header)}, "
                                      f"one per header column")
            rows.append(row)
    except csv.Error as exc:
        raise DataLayoutError(f"{path}: malformed CSV at line {reader.line_num} ({exc}); "
                              f"expected a comma-separated table") from None
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataLayoutError(f"{path}: column {name!r} appears twice in the header; expected unique columns")
        seen.add(name)
    return header, rows


def column_index(path: Path, header: list[str], name: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise DataLayoutError(f"{path}: expected column {name!r}, found columns {header[:12]}"
                              f"{' ...' if len(header) > 12 else ''}") from None


def to_float(path: Path, name: str, value: str, where: str = "") -> float:
    """``value`` of column ``name`` as a finite float (``where``: e.g. "planet_id 7: " for the message)."""
    try:
        number = float(value)
    except ValueError:
        raise DataLayoutError(f"{path}: {where}column {name!r} = {value!r}; expected a number") from None
    if not math.isfinite(number):
        raise DataLayoutError(f"{path}: {where}column {name!r} = {value!r}; expected a finite number")
    return number


def parse_planet_id(path: Path, row: CsvRow, idx: int) -> int:
    """The planet id of a CSV row: a non-negative integer (``123``, or ``123.0`` as pandas may write it)."""
    value = row[idx].strip()
    try:
        number = int(value)                     # exact for any size
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            as_float = math.nan
        number = int(as_float) if math.isfinite(as_float) and as_float == int(as_float) else -1
    if number < 0:
        raise DataLayoutError(f"{path}: line {row.line}: planet_id = {value!r}; expected a non-negative integer id")
    return number


def planet_row(path: Path, header: list[str], rows: list[CsvRow], planet_id: int) -> CsvRow | None:
    """Return the row of ``planet_id`` (column ``planet_id``) or None.

    Every row's id must be an integer and appear once: a corrupt file is refused, not
    searched around.
    """
    idx = column_index(path, header, "planet_id")
    found: CsvRow | None = None
    for row in rows:
        if parse_planet_id(path, row, idx) == planet_id:
            if found is not None:
                raise DataLayoutError(f"{path}: planet_id {planet_id} appears on lines {found.line} and {row.line}; "
                                      f"expected one row per planet")
            found = row
    return found


def target_vector(path: Path, header: list[str], row: list[str], where: str = "", prefix: str = "wl") -> np.ndarray:
    """Extract ``<prefix>_1..<prefix>_283`` (``wl``: depths, ``sigma``: their errors in a submission) from a CSV
    row as a (283,) float64 array of finite numbers."""
    return np.array([to_float(path, f"{prefix}_{j}", row[column_index(path, header, f"{prefix}_{j}")], where)
                     for j in range(1, N_TARGETS + 1)], dtype=np.float64)
