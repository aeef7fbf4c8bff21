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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..prefetch import prefetched

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


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataLayoutError(f"{what} not found: expected file {path}")
    return path


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a small CSV file into its header and rows of strings."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataLayoutError(f"{path}: expected a header row, found an empty file")
    header = [h.strip() for h in rows[0]]
    return header, [r for r in rows[1:] if r]


def _column_index(path: Path, header: list[str], name: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise DataLayoutError(f"{path}: expected column {name!r}, found columns {header[:12]}"
                              f"{' ...' if len(header) > 12 else ''}") from None


def _to_float(path: Path, name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataLayoutError(f"{path}: column {name!r} should be numeric, found {value!r}") from None


def _planet_row(path: Path, header: list[str], rows: list[list[str]], planet_id: int) -> list[str] | None:
    """Return the row of ``planet_id`` (column ``planet_id``) or None."""
    idx = _column_index(path, header, "planet_id")
    for row in rows:
        if int(float(row[idx])) == planet_id:
            return row
    return None


def _target_vector(path: Path, header: list[str], row: list[str]) -> np.ndarray:
    """Extract wl_1..wl_283 from a CSV row as a (283,) float64 array."""
    return np.array([_to_float(path, f"wl_{j}", row[_column_index(path, header, f"wl_{j}")])
                     for j in range(1, N_TARGETS + 1)], dtype=np.float64)


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
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataLayoutError(f"{path}: not a readable parquet file ({exc})") from exc
    schema = pf.schema_arrow
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


def _iter_row_batches(pf: pq.ParquetFile, row_start: int, row_stop: int,
                      batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield record batches covering rows ``[row_start, row_stop)``, skipping unneeded row groups."""
    md = pf.metadata
    bounds = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])])
    groups = [g for g in range(md.num_row_groups) if bounds[g + 1] > row_start and bounds[g] < row_stop]
    if not groups:
        return
    pos = int(bounds[groups[0]])
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, use_threads=True):
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
        raise DataLayoutError(f"{path}: expected uint16 values without nulls, conversion failed ({exc})") from exc


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
        return _signal_layout(self.signal_path(instrument), instrument).n_frames

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
        path = self.signal_path(instrument)
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
        batches = _iter_row_batches(pf, start * rpf, stop * rpf, batch_frames * rpf)
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
        """Load and validate the calibration maps of ``instrument`` for this visit."""
        cal_dir = self.calibration_dir(instrument)
        if not cal_dir.is_dir():
            raise DataLayoutError(f"{instrument} calibration directory not found: expected directory {cal_dir}")
        height, width = FRAME_SHAPE[instrument]
        paths = {name: _require_file(cal_dir / f"{name}.parquet", f"{instrument} {name} map")
                 for name in CALIBRATION_NAMES}
        maps = {}
        for name, path in paths.items():
            n_rows = N_LINEAR_COEFFS * height if name == "linear_corr" else height
            try:
                table = pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataLayoutError(f"{path}: not a readable parquet file ({exc})") from exc
            maps[name] = _table_to_array(path, table, n_rows, width, "bool" if name == "dead" else "float")
        return CalibrationMaps(
            dark=maps["dark"], dead=maps["dead"], flat=maps["flat"], read=maps["read"],
            linear_corr=maps["linear_corr"].reshape(N_LINEAR_COEFFS, height, width),
            paths={name: str(p) for name, p in paths.items()},
        )

    def axis(self, instrument: str) -> FrameAxis:
        """Per-frame time axis of ``instrument`` from ``axis_info.parquet``, sliced to :meth:`n_frames`."""
        _check_instrument(instrument)
        path = _require_file(self.root / _AXIS_FILE, "axis_info")
        n = self.n_frames(instrument)
        time_col = f"{instrument}-axis0-h"
        wanted = [time_col]
        if instrument == "AIRS-CH0":
            wanted += ["AIRS-CH0-integration_time", "AIRS-CH0-axis2-um"]
        names = pq.read_schema(path).names
        for col in wanted:
            if col not in names:
                raise DataLayoutError(f"{path}: expected column {col!r}, found columns {names}")
        table = pq.read_table(path, columns=wanted)
        cols = {}
        for col in wanted:
            values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            cols[col] = values[np.isfinite(values)]
        for col in wanted[:2]:
            if cols[col].size < n:
                raise DataLayoutError(f"{path}: column {col!r} has {cols[col].size} non-NaN rows, "
                                      f"expected at least n_frames = {n} of {self.signal_path(instrument)}")
        time_s = cols[time_col][:n] * 3600.0
        read_kind = (np.arange(n) % 2).astype(np.int8)
        if instrument == "AIRS-CH0":
            exptime = cols["AIRS-CH0-integration_time"][:n].copy()
            exptime[1::2] += exptime[0::2][: exptime[1::2].size]
            wavelength = cols["AIRS-CH0-axis2-um"]
            if wavelength.size != FRAME_SHAPE[instrument][1]:
                raise DataLayoutError(f"{path}: column 'AIRS-CH0-axis2-um' should have "
                                      f"{FRAME_SHAPE[instrument][1]} non-NaN values, found {wavelength.size}")
            return FrameAxis(time_s, exptime, read_kind, wavelength)
        exptime = np.where(read_kind == 0, FGS_READ_EXPTIME_S[0], FGS_READ_EXPTIME_S[1]).astype(np.float64)
        return FrameAxis(time_s, exptime, read_kind, None)

    def _adc_file(self) -> Path:
        for path in (self.root / _ADC_FILE_2025, self.root / f"{self.split}_adc_info.csv"):
            if path.is_file():
                return path
        raise DataLayoutError(f"ADC info not found: expected {self.root / _ADC_FILE_2025} (2025) or "
                              f"{self.root / f'{self.split}_adc_info.csv'} (2024)")

    def adc(self, instrument: str) -> tuple[float, float]:
        """ADC ``(gain, offset)`` of ``instrument``: electrons = DN / gain + offset."""
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
        gain = _to_float(path, gain_col, row[_column_index(path, header, gain_col)])
        offset = _to_float(path, offset_col, row[_column_index(path, header, offset_col)])
        return gain, offset

    def _star_info_file(self) -> Path:
        return self.root / f"{self.split}_star_info.csv"

    def star_info(self) -> dict | None:
        """Stellar and orbital parameters of the planet, or None.

        Returns
        -------
        dict or None
            ``{"Rs", "Ms", "Ts", "Mp", "e", "P", "sma", "i"}`` as floats (units as in the
            data: R_sun, M_sun, K, Mp as given, -, days, a/R_s, degrees), or None when
            ``<split>_star_info.csv`` is absent (2024 layout) or has no row for this planet.
        """
        path = self._star_info_file()
        if not path.is_file():
            return None
        header, rows = _read_csv(path)
        row = _planet_row(path, header, rows, self.planet_id)
        if row is None:
            return None
        return {k: _to_float(path, k, row[_column_index(path, header, k)]) for k in _STAR_INFO_KEYS}

    def _labels_file(self) -> Path | None:
        for name in ("train.csv", "train_labels.csv"):
            if (self.root / name).is_file():
                return self.root / name
        return None

    def labels(self) -> np.ndarray | None:
        """Truth (Rp/Rs)^2 per target, shape (283,), or None (test split, no file or no row)."""
        path = self._labels_file()
        if self.split != "train" or path is None:
            return None
        header, rows = _read_csv(path)
        row = _planet_row(path, header, rows, self.planet_id)
        return None if row is None else _target_vector(path, header, row)

    def wavelengths(self) -> np.ndarray:
        """Wavelength of each of the 283 targets in um (wl_1 = FGS1, then AIRS ascending)."""
        path = _require_file(self.root / _WAVELENGTH_FILE, "wavelengths")
        header, rows = _read_csv(path)
        if len(rows) != 1:
            raise DataLayoutError(f"{path}: expected one data row, found {len(rows)}")
        return _target_vector(path, header, rows[0])

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
        return {k: str(p) for k, p in candidates.items() if p is not None and p.is_file()}


def _split_dir(root: str | Path, split: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"dataset root not found: expected a directory at {root}")
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataLayoutError(f"split directory not found: expected {split_dir}, found directories {found}")
    return split_dir


def list_planets(root: str | Path, split: str = "train") -> list[int]:
    """Sorted planet ids of ``split`` (the integer-named directories under ``<root>/<split>``)."""
    split_dir = _split_dir(root, split)
    return sorted(int(p.name) for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit())


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
    """
    ids = list_planets(root, split)
    split_dir = Path(root) / split
    if not ids:
        raise DataLayoutError(f"no planet directories (integer names) found in {split_dir}")
    if planet_id is None:
        planet_id = ids[0]
    elif int(planet_id) not in ids:
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        raise DataLayoutError(f"planet {planet_id} not found: expected directory {split_dir / str(planet_id)}; "
                              f"{len(ids)} available: {shown}")
    planet_id = int(planet_id)
    year = _detect_year(split_dir / str(planet_id), visit)
    return Planet(root=Path(root), split=split, planet_id=planet_id, visit=visit, year=year)
