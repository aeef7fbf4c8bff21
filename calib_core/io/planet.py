"""One planet visit of a Kaggle-layout dataset: its frames, calibration maps, time axis and metadata."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..prefetch import prefetched
from .csv_tables import CsvRow, column_index, planet_row, read_csv, target_vector, to_float
from .layout import (ADC_FILE_2025, AXIS_FILE, CALIBRATION_NAMES, FGS_READ_EXPTIME_S, FRAME_SHAPE, N_LINEAR_COEFFS,
                     N_TARGETS, WAVELENGTH_FILE, DataLayoutError, as_planet_id, check_instrument, detect_year,
                     exc_text, list_planets, require_file, resolves_inside)
from .parquet_frames import (MIN_BATCH_FRAMES, batch_pixels, file_metadata, iter_row_batches, leading_values,
                             read_parquet, signal_layout, table_matrix, table_to_array)

log = logging.getLogger(__name__)

__all__ = ["STAR_INFO_BOUNDS", "CalibrationMaps", "FrameAxis", "Planet", "open_planet"]


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
        return resolves_inside(self.root, path, what)

    def _file(self, path: Path, what: str) -> Path:
        """``path``, checked to resolve inside the root and to be a file."""
        return require_file(self._inside(path, what), what)

    def signal_path(self, instrument: str) -> Path:
        """Path of the raw signal parquet of ``instrument`` (not checked for existence)."""
        check_instrument(instrument)
        suffix = f"_{self.visit}" if self.year == 2025 else ""
        return self.directory / f"{instrument}_signal{suffix}.parquet"

    def calibration_dir(self, instrument: str) -> Path:
        """Directory holding the calibration parquet files of ``instrument`` (not checked)."""
        check_instrument(instrument)
        suffix = f"_{self.visit}" if self.year == 2025 else ""
        return self.directory / f"{instrument}_calibration{suffix}"

    def n_frames(self, instrument: str) -> int:
        """Number of frames (reads) in the signal file, from the parquet metadata only."""
        path = self._inside(self.signal_path(instrument), f"{instrument} signal file")
        return signal_layout(path, instrument).n_frames

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
        layout = signal_layout(path, instrument)
        stop = layout.n_frames if stop is None else stop
        if not 0 <= start <= stop <= layout.n_frames:
            raise ValueError(f"frame range [{start}, {stop}) outside [0, {layout.n_frames}] of {path}")
        height, width = FRAME_SHAPE[instrument]
        chunk_pixels = chunk_frames * height * width
        pf = pq.ParquetFile(path, metadata=file_metadata(path), pre_buffer=False)  # pre-buffering ~doubles peak memory
        cast_schema = None
        if layout.needs_cast:
            cast_schema = pa.schema([pa.field(f.name, pa.uint16()) for f in pf.schema_arrow])
        rpf = layout.rows_per_frame
        pending: list[np.ndarray] = []
        n_pending = 0
        first = start
        batch_frames = max(chunk_frames, MIN_BATCH_FRAMES)
        batches = iter_row_batches(path, pf, start * rpf, stop * rpf, batch_frames * rpf)
        for pixels in prefetched((batch_pixels(path, batch, cast_schema) for batch in batches),
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
                table = read_parquet(path)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise DataLayoutError(f"{path}: not a readable parquet file ({exc_text(exc)}); "
                                      f"expected an intact parquet file") from None
            arr = table_to_array(path, table, n_rows, width, "bool" if name == "dead" else "float")
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
        path = self._file(self.root / AXIS_FILE, "axis_info")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{path}: not a readable parquet file ({exc_text(exc)}); "
                                  f"expected an intact parquet file") from None
        for col in columns:
            if col not in schema.names:
                raise DataLayoutError(f"{path}: expected column {col!r}, found columns {schema.names}")
            ftype = schema.field(col).type
            if not (pa.types.is_floating(ftype) or pa.types.is_integer(ftype)):
                raise DataLayoutError(f"{path}: column {col!r} has type {ftype}; expected float64 values")
        try:
            table = read_parquet(path, columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{path}: not a readable parquet file ({exc_text(exc)}); "
                                  f"expected an intact parquet file") from None
        out = {}
        for col in columns:
            values = table_matrix(table.select([col]), pa.float64())[:, 0]
            out[col] = leading_values(path, col, values)
        return out

    def axis(self, instrument: str) -> FrameAxis:
        """Per-frame time axis of ``instrument`` from ``axis_info.parquet``.

        The time column (and AIRS-CH0's integration times) must hold exactly one value per
        frame of the signal file, NaN only as padding after the last one; times strictly
        increasing; integration times > 0; wavelengths positive and monotonic.
        """
        check_instrument(instrument)
        path = self._file(self.root / AXIS_FILE, "axis_info")
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
        for path in (self.root / ADC_FILE_2025, self.root / f"{self.split}_adc_info.csv"):
            if self._inside(path, "ADC info").is_file():
                return path
        raise DataLayoutError(f"ADC info not found: expected {self.root / ADC_FILE_2025} (2025) or "
                              f"{self.root / f'{self.split}_adc_info.csv'} (2024)")

    def adc(self, instrument: str) -> tuple[float, float]:
        """ADC ``(gain, offset)`` of ``instrument``: electrons = DN / gain + offset (gain > 0, both finite)."""
        check_instrument(instrument)
        path = self._adc_file()
        header, rows = read_csv(path)
        if "planet_id" in header:
            row = planet_row(path, header, rows, self.planet_id)
            if row is None:
                raise DataLayoutError(f"{path}: expected a row for planet_id {self.planet_id}, found none")
        elif len(rows) == 1:
            row = rows[0]
        else:
            raise DataLayoutError(f"{path}: expected one data row (or a planet_id column), found {len(rows)} rows")
        gain_col, offset_col = f"{instrument}_adc_gain", f"{instrument}_adc_offset"
        raw_gain = row[column_index(path, header, gain_col)]
        try:
            gain = float(raw_gain)
        except ValueError:
            gain = math.nan
        if not (math.isfinite(gain) and gain > 0):
            raise DataLayoutError(f"{path}: column {gain_col!r} = {raw_gain!r}; expected a finite gain > 0 "
                                  f"(DN per electron; 0.4369 in the 2025 data)")
        offset = to_float(path, offset_col, row[column_index(path, header, offset_col)])
        return gain, offset

    def _own_row(self, path: Path) -> tuple[list[str], CsvRow, str] | None:
        """Header and this planet's row of a per-planet CSV, with the ``where`` of its messages (None: no row)."""
        header, rows = read_csv(path)
        row = planet_row(path, header, rows, self.planet_id)
        if row is None:
            return None
        return header, row, f"planet_id {self.planet_id} (line {row.line}): "

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
        found = self._own_row(path) if path.is_file() else None
        if found is None:
            return None
        header, row, where = found
        info = {k: to_float(path, k, row[column_index(path, header, k)], where) for k in _STAR_INFO_KEYS}
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
        found = self._own_row(path) if self.split == "train" and path is not None else None
        if found is None:
            return None
        header, row, where = found
        values = target_vector(path, header, row, where)
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
        path = self._file(self.root / WAVELENGTH_FILE, "wavelengths")
        header, rows = read_csv(path)
        if len(rows) != 1:
            raise DataLayoutError(f"{path}: expected one data row, found {len(rows)}")
        values = target_vector(path, header, rows[0])
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
            "axis_info": self.root / AXIS_FILE,
            "adc_info": self.root / ADC_FILE_2025,
            "wavelengths": self.root / WAVELENGTH_FILE,
            "star_info": self._star_info_file(),
            "labels": self._labels_file(),
        }
        if not candidates["adc_info"].is_file():
            candidates["adc_info"] = self.root / f"{self.split}_adc_info.csv"
        return {k: str(self._inside(p, k)) for k, p in candidates.items() if p is not None and p.is_file()}


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
        planet_id = as_planet_id(planet_id)
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
    year = detect_year(split_dir / str(planet_id), visit)
    return Planet(root=Path(root), split=split, planet_id=planet_id, visit=visit, year=year)
