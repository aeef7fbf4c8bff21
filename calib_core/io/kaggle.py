"""Reader for the Ariel Data Challenge (2024 and 2025) Kaggle data layout.

Layout (2025; see ``ariel_data.md`` sections 1.1-1.5)::

    <root>/train.csv  train_star_info.csv  wavelengths.csv  adc_info.csv  axis_info.parquet
    <root>/<split>/<planet_id>/AIRS-CH0_signal_<visit>.parquet       (n_frames, 32*356) uint16
    <root>/<split>/<planet_id>/FGS1_signal_<visit>.parquet           (n_frames, 32*32)  uint16
    <root>/<split>/<planet_id>/<instrument>_calibration_<visit>/{dark,dead,flat,read,linear_corr}.parquet

The 2024 layout differs only in names: ``<instrument>_signal.parquet``,
``<instrument>_calibration/``, ``train_labels.csv`` and per-planet
``<split>_adc_info.csv`` instead of the single-row ``adc_info.csv``.

Signal files are streamed with :meth:`pyarrow.parquet.ParquetFile.iter_batches`
(no pandas); memory use is bounded by one chunk of frames.  Every layout
problem raises :class:`DataLayoutError` naming the file (or key) and what was
expected versus found.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..prefetch import prefetched

log = logging.getLogger(__name__)

__all__ = [
    "INSTRUMENTS",
    "FRAME_SHAPE",
    "FULL_FRAMES",
    "AIRS_CROP",
    "N_TARGETS",
    "FGS_READ_EXPTIME_S",
    "CALIBRATION_NAMES",
    "DataLayoutError",
    "CalibrationMaps",
    "FrameAxis",
    "Planet",
    "open_planet",
    "list_planets",
]

INSTRUMENTS = ("FGS1", "AIRS-CH0")
FRAME_SHAPE = {"FGS1": (32, 32), "AIRS-CH0": (32, 356)}
FULL_FRAMES = {"FGS1": 135000, "AIRS-CH0": 11250}
AIRS_CROP = (39, 321)  # detector columns kept for the 282 AIRS targets (stop exclusive)
N_TARGETS = 283  # wl_1 (FGS1) + 282 AIRS-CH0 bins
FGS_READ_EXPTIME_S = (0.1, 0.2)  # cumulative integration at the first / second FGS1 read (reference convention)
CALIBRATION_NAMES = ("dark", "dead", "flat", "read", "linear_corr")
N_LINEAR_COEFFS = 6  # linear_corr holds c0..c5 of the inverse non-linearity polynomial

_AXIS_FILE = "axis_info.parquet"
_WAVELENGTH_FILE = "wavelengths.csv"
_ADC_FILE_2025 = "adc_info.csv"
_STAR_INFO_KEYS = ("Rs", "Ms", "Ts", "Mp", "e", "P", "sma", "i")
#: star info: physically possible values (refused outside) and the train-set range of ariel_data.md 1.7
#: (a value outside it is logged).  (low, low inclusive, high, high inclusive, unit, train min, train max)
STAR_INFO_BOUNDS = {
    "Rs": (0.0, False, math.inf, False, "R_sun", 0.654, 2.887),
    "Ms": (0.0, False, math.inf, False, "M_sun", 0.599, 1.818),
    "Ts": (0.0, False, math.inf, False, "K", 4236.0, 6979.0),
    "Mp": (0.0, False, math.inf, False, "planet mass", 0.049, 24.7),
    "e": (0.0, True, 1.0, False, "", 0.0, 0.0),
    "P": (0.0, False, math.inf, False, "days", 2.78, 7.61),
    "sma": (1.0, False, math.inf, False, "a/R_s (the orbit lies outside the star)", 4.23, 20.95),
    "i": (0.0, True, 90.0, True, "degrees", 85.57, 90.0),
}
_MAX_CSV_BYTES = 512 << 20  # the largest real CSV (train.csv, 1100 x 284) is ~6 MB
_MIN_BATCH_FRAMES = 2048  # parquet batches are never smaller: each costs ~0.2-0.3 s on 11392-column files (~250 MB peak for AIRS)


class DataLayoutError(ValueError):
    """The files on disk do not match the Kaggle layout.

    The message always names the offending file (full path) or key, and states
    what was expected and what was found.
    """


@dataclass(frozen=True, eq=False)
class CalibrationMaps:
    """Calibration maps of one instrument for one visit.

    Attributes
    ----------
    dark : numpy.ndarray
        (H, W) float64 dark current in e-/s.
    dead : numpy.ndarray
        (H, W) bool, True for dead pixels.
    flat : numpy.ndarray
        (H, W) float64 relative pixel response (dimensionless).
    read : numpy.ndarray
        (H, W) float64 read noise in e- rms per read.
    linear_corr : numpy.ndarray
        (6, H, W) float64 coefficients of the inverse non-linearity:
        ``corrected = sum_k linear_corr[k] * x**k`` (x and result in e-).
    paths : dict of str to str
        Map name -> file path of every map (for provenance checksums).
    """

    dark: np.ndarray
    dead: np.ndarray
    flat: np.ndarray
    read: np.ndarray
    linear_corr: np.ndarray
    paths: dict[str, str]


@dataclass(frozen=True, eq=False)
class FrameAxis:
    """Per-frame time axis of one instrument (from ``axis_info.parquet``).

    Attributes
    ----------
    time_s : numpy.ndarray
        (N,) float64 time of each read in seconds since the start of the visit
        (``<instrument>-axis0-h`` times 3600).
    exptime_s : numpy.ndarray
        (N,) float64 cumulative integration time since the reset at this read,
        in seconds: AIRS-CH0 ``[0.1, 4.6, 0.1, 4.6, ...]`` (the
        ``integration_time`` column with each odd entry incremented by the
        preceding even one); FGS1 ``[0.1, 0.2, ...]`` (no column exists in the
        data; reference convention).
    read_kind : numpy.ndarray
        (N,) int8: 0 for the first read after a reset (even index), 1 for the
        second (signal) read (odd index).
    wavelength_um : numpy.ndarray or None
        AIRS-CH0: (356,) float64 wavelength of each detector column in um,
        descending (``AIRS-CH0-axis2-um``); FGS1: None.
    """

    time_s: np.ndarray
    exptime_s: np.ndarray
    read_kind: np.ndarray
    wavelength_um: np.ndarray | None


def _check_instrument(instrument: str) -> None:
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")


def _exc_text(exc: BaseException) -> str:
    """First line of an exception's message (no class name), at most 200 characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text[:200] + ("..." if len(text) > 200 else "")


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataLayoutError(f"{what} not found: expected file {path}")
    return path


class _CsvRow(list):
    """One CSV data row (a list of strings) that knows its line number in the file."""

    line: int = 0


def _read_csv(path: Path) -> tuple[list[str], list[_CsvRow]]:
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
        rows: list[_CsvRow] = []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            row = _CsvRow(fields)
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


def _column_index(path: Path, header: list[str], name: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise DataLayoutError(f"{path}: expected column {name!r}, found columns {header[:12]}"
                              f"{' ...' if len(header) > 12 else ''}") from None


def _to_float(path: Path, name: str, value: str, where: str = "") -> float:
    """``value`` of column ``name`` as a finite float (``where``: e.g. "planet_id 7: " for the message)."""
    try:
        number = float(value)
    except ValueError:
        raise DataLayoutError(f"{path}: {where}column {name!r} = {value!r}; expected a number") from None
    if not math.isfinite(number):
        raise DataLayoutError(f"{path}: {where}column {name!r} = {value!r}; expected a finite number")
    return number


def _parse_planet_id(path: Path, row: _CsvRow, idx: int) -> int:
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


def _planet_row(path: Path, header: list[str], rows: list[_CsvRow], planet_id: int) -> _CsvRow | None:
    """Return the row of ``planet_id`` (column ``planet_id``) or None.

    Every row's id must be an integer and appear once: a corrupt file is refused, not
    searched around.
    """
    idx = _column_index(path, header, "planet_id")
    found: _CsvRow | None = None
    for row in rows:
        if _parse_planet_id(path, row, idx) == planet_id:
            if found is not None:
                raise DataLayoutError(f"{path}: planet_id {planet_id} appears on lines {found.line} and {row.line}; "
                                      f"expected one row per planet")
            found = row
    return found


def _target_vector(path: Path, header: list[str], row: list[str], where: str = "") -> np.ndarray:
    """Extract wl_1..wl_283 from a CSV row as a (283,) float64 array of finite numbers."""
    return np.array([_to_float(path, f"wl_{j}", row[_column_index(path, header, f"wl_{j}")], where)
                     for j in range(1, N_TARGETS + 1)], dtype=np.float64)


def _resolves_inside(root: Path, path: Path, what: str) -> Path:
    """``path``, refused when it (or a directory on the way) is a symlink leading outside ``root``.

    The message is the same whether the link target exists or not.
    """
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise DataLayoutError(f"{path}: {what} resolves outside the dataset root {base}; "
                              f"expected a path inside the dataset root")
    return path


def _leading_values(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    """The values of a NaN-padded ``axis_info`` column: NaN is allowed only after the last value."""
    nan = np.isnan(values)
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        raise DataLayoutError(f"{path}: column {name!r} row {int(inf[0])} = {values[inf[0]]!r}; "
                              f"expected finite values (NaN only as padding after the last one)")
    present = np.flatnonzero(~nan)
    n = int(present[-1]) + 1 if present.size else 0
    holes = np.flatnonzero(nan[:n])
    if holes.size:
        raise DataLayoutError(f"{path}: column {name!r} has a NaN at row {int(holes[0])} before its last value "
                              f"(row {n - 1}); expected NaN only as padding after the last value")
    return values[:n]


def _table_to_array(path: Path, table: pa.Table, n_rows: int, n_cols: int, kind: str) -> np.ndarray:
    """Convert a small calibration table to a 2-D numpy array with validation.

    Parameters
    ----------
    path : pathlib.Path
        File the table came from (for error messages).
    table : pyarrow.Table
        The table read from ``path``.
    n_rows, n_cols : int
        Expected shape.
    kind : {"float", "bool"}
        Expected content: numeric (returned as float64) or boolean (returned as bool;
        integer 0/1 columns are accepted).
    """
    if table.num_columns != n_cols or table.num_rows != n_rows:
        raise DataLayoutError(f"{path}: expected {n_rows} rows x {n_cols} columns, "
                              f"found {table.num_rows} x {table.num_columns}")
    types = {f.type for f in table.schema}
    if any(table.column(j).null_count for j in range(n_cols)):
        raise DataLayoutError(f"{path}: expected no null values, found nulls")
    if kind == "bool":
        if all(pa.types.is_boolean(t) for t in types):
            return np.column_stack([c.to_numpy() for c in table.columns]).astype(bool)
        if all(pa.types.is_integer(t) for t in types):
            arr = np.column_stack([c.to_numpy() for c in table.columns])
            if np.isin(arr, (0, 1)).all():
                return arr.astype(bool)
        raise DataLayoutError(f"{path}: expected bool columns, found {sorted(map(str, types))}")
    if not all(pa.types.is_floating(t) or pa.types.is_integer(t) for t in types):
        raise DataLayoutError(f"{path}: expected numeric (float64) columns, found {sorted(map(str, types))}")
    return np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float64)


@dataclass(frozen=True)
class _SignalLayout:
    """How frames are stored in one signal parquet file."""

    rows_per_frame: int  # 1 for the wide layout, H*W for a single-column layout
    n_frames: int
    needs_cast: bool  # integer columns that are not all uint16


def _signal_layout(path: Path, instrument: str) -> _SignalLayout:
    """Validate a signal file from its parquet metadata (no data read).

    Parsing the footer of an 11392-column file costs ~0.4 s, so the result is
    cached per (path, size, mtime): a rewritten file is parsed again.
    """
    _require_file(path, f"{instrument} signal file")
    st = path.stat()
    return _signal_layout_cached(path, instrument, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _signal_layout_cached(path: Path, instrument: str, size: int, mtime_ns: int) -> _SignalLayout:
    height, width = FRAME_SHAPE[instrument]
    n_pix = height * width
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataLayoutError(f"{path}: not a readable parquet file ({_exc_text(exc)}); "
                              f"expected a parquet file with an intact footer") from None
    bad = sorted({str(f.type) for f in schema if not pa.types.is_integer(f.type)})
    if bad:
        raise DataLayoutError(f"{path}: signal columns must be integer (uint16 ADC counts), found {bad}")
    n_rows = pf.metadata.num_rows
    needs_cast = any(f.type != pa.uint16() for f in schema)
    if len(schema) == n_pix:
        return _SignalLayout(1, n_rows, needs_cast)
    if len(schema) == 1 and n_rows % n_pix == 0:
        return _SignalLayout(n_pix, n_rows // n_pix, needs_cast)
    raise DataLayoutError(f"{path}: expected {n_pix} columns ({instrument} frame {height}x{width} flattened "
                          f"row-major), or one column with a multiple of {n_pix} rows; "
                          f"found {len(schema)} columns x {n_rows} rows")


def _iter_row_batches(path: Path, pf: pq.ParquetFile, row_start: int, row_stop: int,
                      batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield record batches covering rows ``[row_start, row_stop)``, skipping unneeded row groups."""
    md = pf.metadata
    bounds = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])])
    groups = [g for g in range(md.num_row_groups) if bounds[g + 1] > row_start and bounds[g] < row_stop]
    if not groups:
        return
    pos = int(bounds[groups[0]])
    batches = pf.iter_batches(batch_size=batch_rows, row_groups=groups, use_threads=True)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            # a damaged page (validate_planet finds these before a run; direct readers learn it here)
            raise DataLayoutError(f"{path}: damaged data after row {pos} ({_exc_text(exc)}); "
                                  f"expected intact parquet pages") from None
        if batch is None:
            return
        lo, hi = max(row_start, pos), min(row_stop, pos + batch.num_rows)
        if hi > lo:
            yield batch.slice(lo - pos, hi - lo)
        pos += batch.num_rows
        if pos >= row_stop:
            return


def _batch_pixels(path: Path, batch: pa.RecordBatch, cast_schema: pa.Schema | None) -> np.ndarray:
    """Flatten a record batch into a 1-D uint16 pixel stream (frame-major, row-major pixels)."""
    try:
        if cast_schema is not None:
            batch = batch.cast(cast_schema, safe=True)
        return np.asarray(batch.to_tensor(row_major=True)).reshape(-1)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataLayoutError(f"{path}: values that are not uint16 ADC counts ({_exc_text(exc)}); "
                              f"expected uint16 values without nulls") from None


@dataclass(frozen=True)
class Planet:
    """One visit of one planet in a Kaggle-layout dataset.

    Attributes
    ----------
    root : pathlib.Path
        Dataset root (the directory holding ``train/``, ``axis_info.parquet``, ...).
    split : str
        ``"train"`` or ``"test"``.
    planet_id : int
        Planet identifier (directory name).
    visit : int
        Observation index (``_0``, ``_1`` suffix; always 0 for the 2024 layout).
    year : int
        2025 or 2024: which file naming convention the planet directory uses.
    """

    root: Path
    split: str
    planet_id: int
    visit: int
    year: int

    @property
    def directory(self) -> Path:
        """Directory ``<root>/<split>/<planet_id>`` holding the signal and calibration files."""
        return self.root / self.split / str(self.planet_id)

    def _inside(self, path: Path, what: str) -> Path:
        """``path`` if it resolves inside the dataset root (symlinks followed), else :class:`DataLayoutError`."""
        return _resolves_inside(self.root, path, what)

    def _file(self, path: Path, what: str) -> Path:
        """``path``, checked to resolve inside the root and to be a file."""
        return _require_file(self._inside(path, what), what)

    def signal_path(self, instrument: str) -> Path:
        """Path of the raw signal parquet of ``instrument`` (not checked for existence)."""
        _check_instrument(instrument)
        suffix = f"_{self.visit}" if self.year == 2025 else ""
        return self.directory / f"{instrument}_signal{suffix}.parquet"

    def calibration_dir(self, instrument: str) -> Path:
        """Directory holding the calibration parquet files of ``instrument`` (not checked)."""
        _check_instrument(instrument)
        suffix = f"_{self.visit}" if self.year == 2025 else ""
        return self.directory / f"{instrument}_calibration{suffix}"

    def n_frames(self, instrument: str) -> int:
        """Number of frames (reads) in the signal file, from the parquet metadata only."""
        path = self._inside(self.signal_path(instrument), f"{instrument} signal file")
        return _signal_layout(path, instrument).n_frames

    def iter_frames(self, instrument: str, chunk_frames: int = 2048, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream raw frames in chunks.

        Parameters
        ----------
        instrument : str
            ``"FGS1"`` or ``"AIRS-CH0"``.
        chunk_frames : int
            Frames per yielded chunk; every chunk but the last has exactly this many.
            Use an even number to keep read pairs together.
        start, stop : int
            Frame range ``[start, stop)``; ``stop=None`` means the end of the file.

        Yields
        ------
        first : int
            Index of the first frame of the chunk in the whole visit.
        frames : numpy.ndarray
            (n, H, W) uint16 raw ADC counts (DN).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        path = self._inside(self.signal_path(instrument), f"{instrument} signal file")
        layout = _signal_layout(path, instrument)
        stop = layout.n_frames if stop is None else stop
        if not 0 <= start <= stop <= layout.n_frames:
            raise ValueError(f"frame range [{start}, {stop}) outside [0, {layout.n_frames}] of {path}")
        height, width = FRAME_SHAPE[instrument]
        chunk_pixels = chunk_frames * height * width
        pf = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering ~doubles peak memory on wide files
        cast_schema = None
        if layout.needs_cast:
            cast_schema = pa.schema([pa.field(f.name, pa.uint16()) for f in pf.schema_arrow])
        rpf = layout.rows_per_frame
        pending: list[np.ndarray] = []
        n_pending = 0
        first = start
        batch_frames = max(chunk_frames, _MIN_BATCH_FRAMES)
        batches = _iter_row_batches(path, pf, start * rpf, stop * rpf, batch_frames * rpf)
        for pixels in prefetched((_batch_pixels(path, batch, cast_schema) for batch in batches),
                                 name="parquet-prefetch"):
            pending.append(pixels)
            n_pending += pending[-1].size
            while n_pending >= chunk_pixels:
                flat = pending[0] if len(pending) == 1 else np.concatenate(pending)
                yield first, flat[:chunk_pixels].reshape(chunk_frames, height, width)
                first += chunk_frames
                rest = flat[chunk_pixels:]
                pending, n_pending = ([rest], rest.size) if rest.size else ([], 0)
        if n_pending:
            flat = pending[0] if len(pending) == 1 else np.concatenate(pending)
            yield first, flat.reshape(-1, height, width)
        del pf, batches, pending
        # Arrow's allocator keeps freed decode buffers (~4x a batch on wide files) for reuse: hand them back
        pa.default_memory_pool().release_unused()

    def read_frames(self, instrument: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Read frames ``[start, stop)`` into one (n, H, W) uint16 array."""
        n_total = self.n_frames(instrument)
        stop = n_total if stop is None else stop
        if not 0 <= start <= stop <= n_total:
            raise ValueError(f"frame range [{start}, {stop}) outside [0, {n_total}] "
                             f"of {self.signal_path(instrument)}")
        out = np.empty((stop - start, *FRAME_SHAPE[instrument]), dtype=np.uint16)
        for first, frames in self.iter_frames(instrument, start=start, stop=stop):
            out[first - start:first - start + len(frames)] = frames
        return out

    def calibration(self, instrument: str) -> CalibrationMaps:
        """Load and validate the calibration maps of ``instrument`` for this visit.

        Shapes and dtypes as documented on :class:`CalibrationMaps`; every value of the float
        maps finite, read noise not negative.
        """
        cal_dir = self._inside(self.calibration_dir(instrument), f"{instrument} calibration directory")
        if not cal_dir.is_dir():
            raise DataLayoutError(f"{instrument} calibration directory not found: expected directory {cal_dir}")
        height, width = FRAME_SHAPE[instrument]
        paths = {name: self._file(cal_dir / f"{name}.parquet", f"{instrument} {name} map")
                 for name in CALIBRATION_NAMES}
        maps = {}
        for name, path in paths.items():
            n_rows = N_LINEAR_COEFFS * height if name == "linear_corr" else height
            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise DataLayoutError(f"{path}: not a readable parquet file ({_exc_text(exc)}); "
                                      f"expected an intact parquet file") from None
            arr = _table_to_array(path, table, n_rows, width, "bool" if name == "dead" else "float")
            if name != "dead":
                bad = np.argwhere(~np.isfinite(arr))
                if bad.size:
                    r, c = (int(v) for v in bad[0])
                    raise DataLayoutError(f"{path}: {len(bad)} non-finite values (first: row {r} column_{c} = "
                                          f"{float(arr[r, c])!r}); expected finite values in the {name} map")
            if name == "read" and np.any(arr < 0):
                r, c = (int(v) for v in np.argwhere(arr < 0)[0])
                raise DataLayoutError(f"{path}: read noise {float(arr[r, c])!r} e- at row {r} column_{c}; "
                                      f"expected read noise >= 0")
            maps[name] = arr
        return CalibrationMaps(
            dark=maps["dark"], dead=maps["dead"], flat=maps["flat"], read=maps["read"],
            linear_corr=maps["linear_corr"].reshape(N_LINEAR_COEFFS, height, width),
            paths={name: str(p) for name, p in paths.items()},
        )

    def axis_columns(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Columns of ``axis_info.parquet`` as float64 arrays without their trailing NaN padding.

        Raises :class:`DataLayoutError` for a missing or non-numeric column, an infinite value
        or a NaN hole before a column's last value (a hole would shift every later frame).
        """
        path = self._file(self.root / _AXIS_FILE, "axis_info")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{path}: not a readable parquet file ({_exc_text(exc)}); "
                                  f"expected an intact parquet file") from None
        for col in columns:
            if col not in schema.names:
                raise DataLayoutError(f"{path}: expected column {col!r}, found columns {schema.names}")
            ftype = schema.field(col).type
            if not (pa.types.is_floating(ftype) or pa.types.is_integer(ftype)):
                raise DataLayoutError(f"{path}: column {col!r} has type {ftype}; expected float64 values")
        try:
            table = pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{path}: not a readable parquet file ({_exc_text(exc)}); "
                                  f"expected an intact parquet file") from None
        out = {}
        for col in columns:
            values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            out[col] = _leading_values(path, col, values)
        return out

    def axis(self, instrument: str) -> FrameAxis:
        """Per-frame time axis of ``instrument`` from ``axis_info.parquet``.

        The time column (and AIRS-CH0's integration times) must hold exactly one value per
        frame of the signal file, NaN only as padding after the last one; times strictly
        increasing; integration times > 0; wavelengths positive and monotonic.
        """
        _check_instrument(instrument)
        path = self._file(self.root / _AXIS_FILE, "axis_info")
        n = self.n_frames(instrument)
        time_col = f"{instrument}-axis0-h"
        wanted = [time_col]
        if instrument == "AIRS-CH0":
            wanted += ["AIRS-CH0-integration_time", "AIRS-CH0-axis2-um"]
        cols = self.axis_columns(wanted)
        signal = self.signal_path(instrument)
        for col in wanted[:2]:
            if cols[col].size < n:
                raise DataLayoutError(f"{path}: column {col!r} has {cols[col].size} non-NaN rows, "
                                      f"expected at least n_frames = {n} of {signal}")
            if cols[col].size > n:
                raise DataLayoutError(f"{path}: column {col!r} has {cols[col].size} non-NaN rows but {signal} "
                                      f"holds {n} frames; expected one row per frame (a truncated signal file?)")
        time_h = cols[time_col]
        step = np.diff(time_h)
        bad = np.flatnonzero(~(step > 0))
        if bad.size:
            i = int(bad[0])
            raise DataLayoutError(f"{path}: column {time_col!r} is not increasing at row {i + 1} "
                                  f"({float(time_h[i + 1])!r} after {float(time_h[i])!r}); "
                                  f"expected strictly increasing times in hours since the visit start")
        time_s = time_h * 3600.0
        read_kind = (np.arange(n) % 2).astype(np.int8)
        if instrument == "AIRS-CH0":
            integration = cols["AIRS-CH0-integration_time"]
            bad = np.flatnonzero(~(integration > 0))
            if bad.size:
                i = int(bad[0])
                raise DataLayoutError(f"{path}: column 'AIRS-CH0-integration_time' row {i} = "
                                      f"{float(integration[i])!r} s; expected integration times > 0 s")
            exptime = integration.copy()
            exptime[1::2] += exptime[0::2][: exptime[1::2].size]
            wavelength = cols["AIRS-CH0-axis2-um"]
            if wavelength.size != FRAME_SHAPE[instrument][1]:
                raise DataLayoutError(f"{path}: column 'AIRS-CH0-axis2-um' should have "
                                      f"{FRAME_SHAPE[instrument][1]} non-NaN values, found {wavelength.size}")
            dw = np.diff(wavelength)
            if not (np.all(wavelength > 0) and (np.all(dw < 0) or np.all(dw > 0))):
                raise DataLayoutError(f"{path}: column 'AIRS-CH0-axis2-um' runs {float(wavelength[0])!r} .. "
                                      f"{float(wavelength[-1])!r} um non-monotonically or not positive; expected "
                                      f"positive wavelengths, strictly monotonic (descending in the real data)")
            return FrameAxis(time_s, exptime, read_kind, wavelength)
        exptime = np.where(read_kind == 0, FGS_READ_EXPTIME_S[0], FGS_READ_EXPTIME_S[1]).astype(np.float64)
        return FrameAxis(time_s, exptime, read_kind, None)

    def _adc_file(self) -> Path:
        for path in (self.root / _ADC_FILE_2025, self.root / f"{self.split}_adc_info.csv"):
            if self._inside(path, "ADC info").is_file():
                return path
        raise DataLayoutError(f"ADC info not found: expected {self.root / _ADC_FILE_2025} (2025) or "
                              f"{self.root / f'{self.split}_adc_info.csv'} (2024)")

    def adc(self, instrument: str) -> tuple[float, float]:
        """ADC ``(gain, offset)`` of ``instrument``: electrons = DN / gain + offset (gain > 0, both finite)."""
        _check_instrument(instrument)
        path = self._adc_file()
        header, rows = _read_csv(path)
        if "planet_id" in header:
            row = _planet_row(path, header, rows, self.planet_id)
            if row is None:
                raise DataLayoutError(f"{path}: expected a row for planet_id {self.planet_id}, found none")
        elif len(rows) == 1:
            row = rows[0]
        else:
            raise DataLayoutError(f"{path}: expected one data row (or a planet_id column), found {len(rows)} rows")
        gain_col, offset_col = f"{instrument}_adc_gain", f"{instrument}_adc_offset"
        raw_gain = row[_column_index(path, header, gain_col)]
        try:
            gain = float(raw_gain)
        except ValueError:
            gain = math.nan
        if not (math.isfinite(gain) and gain > 0):
            raise DataLayoutError(f"{path}: column {gain_col!r} = {raw_gain!r}; expected a finite gain > 0 "
                                  f"(DN per electron; 0.4369 in the 2025 data)")
        offset = _to_float(path, offset_col, row[_column_index(path, header, offset_col)])
        return gain, offset

    def _star_info_file(self) -> Path:
        return self._inside(self.root / f"{self.split}_star_info.csv", "star info")

    def star_info(self) -> dict | None:
        """Stellar and orbital parameters of the planet, or None.

        Returns
        -------
        dict or None
            ``{"Rs", "Ms", "Ts", "Mp", "e", "P", "sma", "i"}`` as floats (units as in the
            data: R_sun, M_sun, K, Mp as given, -, days, a/R_s, degrees), or None when
            ``<split>_star_info.csv`` is absent (2024 layout) or has no row for this planet.

        Raises
        ------
        DataLayoutError
            A value that is not physically possible (:data:`STAR_INFO_BOUNDS`): Rs, Ms, Ts, Mp,
            P > 0, 0 <= e < 1, sma (a/R_s) > 1, 0 <= i <= 90 degrees.  A value outside the
            train-set range of ``ariel_data.md`` is logged as a warning.
        """
        path = self._star_info_file()
        if not path.is_file():
            return None
        header, rows = _read_csv(path)
        row = _planet_row(path, header, rows, self.planet_id)
        if row is None:
            return None
        where = f"planet_id {self.planet_id} (line {row.line}): "
        info = {k: _to_float(path, k, row[_column_index(path, header, k)], where) for k in _STAR_INFO_KEYS}
        for key, value in info.items():
            lo, lo_incl, hi, hi_incl, unit, train_lo, train_hi = STAR_INFO_BOUNDS[key]
            ok = (value >= lo if lo_incl else value > lo) and (value <= hi if hi_incl else value < hi)
            if not ok:
                allowed = (f"{'>=' if lo_incl else '>'} {lo:g}" if math.isinf(hi) else
                           f"in {'[' if lo_incl else '('}{lo:g}, {hi:g}{']' if hi_incl else ')'}")
                raise DataLayoutError(f"{path}: {where}{key} = {value!r}; expected {key} {allowed}"
                                      f"{' ' + unit if unit else ''} (train set: {train_lo:g} .. {train_hi:g})")
            if not train_lo <= value <= train_hi:
                log.warning("%s: %s%s = %r is outside the train-set range %g .. %g", path, where, key, value,
                            train_lo, train_hi)
        return info

    def _labels_file(self) -> Path | None:
        for name in ("train.csv", "train_labels.csv"):
            if self._inside(self.root / name, "labels").is_file():
                return self.root / name
        return None

    def labels(self) -> np.ndarray | None:
        """Truth (Rp/Rs)^2 per target, shape (283,), or None (test split, no file or no row).

        Values must be finite and in [0, 1).
        """
        path = self._labels_file()
        if self.split != "train" or path is None:
            return None
        header, rows = _read_csv(path)
        row = _planet_row(path, header, rows, self.planet_id)
        if row is None:
            return None
        where = f"planet_id {self.planet_id} (line {row.line}): "
        values = _target_vector(path, header, row, where)
        bad = np.flatnonzero(~((values >= 0) & (values < 1)))
        if bad.size:
            j = int(bad[0])
            raise DataLayoutError(f"{path}: {where}wl_{j + 1} = {float(values[j])!r}; expected a transit depth "
                                  f"(Rp/Rs)^2 in [0, 1)")
        return values

    def wavelengths(self) -> np.ndarray:
        """Wavelength of each of the 283 targets in um (wl_1 = FGS1, then AIRS ascending).

        Values must be finite and positive, wl_2..wl_283 strictly increasing.
        """
        path = self._file(self.root / _WAVELENGTH_FILE, "wavelengths")
        header, rows = _read_csv(path)
        if len(rows) != 1:
            raise DataLayoutError(f"{path}: expected one data row, found {len(rows)}")
        values = _target_vector(path, header, rows[0])
        bad = np.flatnonzero(~(values > 0))
        if bad.size:
            j = int(bad[0])
            raise DataLayoutError(f"{path}: wl_{j + 1} = {float(values[j])!r}; expected a wavelength > 0 um")
        bad = np.flatnonzero(~(np.diff(values[1:]) > 0))
        if bad.size:
            j = int(bad[0]) + 2
            raise DataLayoutError(f"{path}: wl_{j + 1} = {float(values[j])!r} um after wl_{j} = "
                                  f"{float(values[j - 1])!r} um; expected wl_2..wl_{N_TARGETS} (AIRS-CH0) "
                                  f"strictly increasing")
        return values

    def metadata_paths(self) -> dict[str, str]:
        """Existing dataset-level files this planet's metadata comes from (for provenance checksums).

        Keys among ``axis_info``, ``adc_info``, ``wavelengths``, ``star_info``, ``labels``;
        files that do not exist are left out.
        """
        candidates = {
            "axis_info": self.root / _AXIS_FILE,
            "adc_info": self.root / _ADC_FILE_2025,
            "wavelengths": self.root / _WAVELENGTH_FILE,
            "star_info": self._star_info_file(),
            "labels": self._labels_file(),
        }
        if not candidates["adc_info"].is_file():
            candidates["adc_info"] = self.root / f"{self.split}_adc_info.csv"
        return {k: str(self._inside(p, k)) for k, p in candidates.items() if p is not None and p.is_file()}


def _split_dir(root: str | Path, split: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"dataset root not found: expected a directory at {root}")
    split_dir = _resolves_inside(root, root / split, "split directory")
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataLayoutError(f"split directory not found: expected {split_dir}, found directories {found}")
    return split_dir


def list_planets(root: str | Path, split: str = "train", refused: list[str] | None = None) -> list[int]:
    """Sorted planet ids of ``split`` (the integer-named directories under ``<root>/<split>``).

    A planet directory that is a symlink leading outside ``root`` is refused
    (:class:`DataLayoutError`, the same message whether its target exists or not);
    given a ``refused`` list, such a planet is left out and its message appended instead
    (a listing for people to pick from, e.g. the app's planet picker).
    """
    split_dir = _split_dir(root, split)
    ids = []
    for p in split_dir.iterdir():
        if p.name.isdigit():
            try:
                _resolves_inside(root, p, "planet directory")
            except DataLayoutError as exc:
                if refused is None:
                    raise
                refused.append(str(exc))
                continue
            if p.is_dir():
                ids.append(int(p.name))
    return sorted(ids)


def _detect_year(directory: Path, visit: int) -> int:
    """2025 if ``<inst>_signal_<visit>.parquet`` exists, 2024 if ``<inst>_signal.parquet`` does."""
    if any((directory / f"{inst}_signal_{visit}.parquet").is_file() for inst in INSTRUMENTS):
        return 2025
    if visit == 0 and any((directory / f"{inst}_signal.parquet").is_file() for inst in INSTRUMENTS):
        return 2024
    found = sorted(p.name for p in directory.iterdir())
    raise DataLayoutError(f"no signal file for visit {visit} in {directory}: expected "
                          f"'<instrument>_signal_{visit}.parquet' (2025) or '<instrument>_signal.parquet' (2024) "
                          f"for an instrument in {INSTRUMENTS}, found {found}")


def _as_planet_id(value: Any) -> int:
    """An integer planet id from an int or a string of digits; anything else is refused."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"planet_id = {value!r}: expected an integer planet id (a directory name)")
    if number < 0:
        raise ValueError(f"planet_id = {value!r}: expected a non-negative integer planet id")
    return number


def open_planet(root: str | Path, planet_id: int | None = None, split: str = "train", visit: int = 0) -> Planet:
    """Open one planet visit of a Kaggle-layout dataset.

    Parameters
    ----------
    root : str or pathlib.Path
        Dataset root directory.
    planet_id : int, optional
        Planet to open; None opens the first planet (sorted by id) of ``split``.
    split : str
        ``"train"`` or ``"test"``.
    visit : int
        Observation index (0 for the first visit).

    Returns
    -------
    Planet

    Raises
    ------
    DataLayoutError
        Missing root, split or planet; a planet directory or split that is a symlink
        leading outside ``root``; no signal file for the visit.
    ValueError
        ``planet_id`` is not an integer.
    """
    if planet_id is not None:
        planet_id = _as_planet_id(planet_id)
    ids = list_planets(root, split)
    split_dir = Path(root) / split
    if not ids:
        raise DataLayoutError(f"no planet directories (integer names) found in {split_dir}")
    if planet_id is None:
        planet_id = ids[0]
    elif planet_id not in ids:
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        raise DataLayoutError(f"planet {planet_id} not found: expected directory {split_dir / str(planet_id)}; "
                              f"{len(ids)} available: {shown}")
    year = _detect_year(split_dir / str(planet_id), visit)
    return Planet(root=Path(root), split=split, planet_id=planet_id, visit=visit, year=year)
