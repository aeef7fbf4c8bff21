"""Parquet readers of the layout: signal frames streamed in batches, calibration tables, axis columns.

Signal files are streamed with :meth:`pyarrow.parquet.ParquetFile.iter_batches`
(no pandas); memory use is bounded by one chunk of frames.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .layout import FRAME_SHAPE, DataLayoutError, exc_text, require_file

__all__ = ["SignalLayout", "signal_layout", "file_metadata", "use_decode_pool", "iter_row_batches", "batch_pixels",
           "table_to_array", "leading_values", "MIN_BATCH_FRAMES"]

#: parquet batches are never smaller: each costs ~0.2-0.3 s on 11392-column files (~250 MB peak for AIRS)
MIN_BATCH_FRAMES = 2048
#: how long Arrow's jemalloc pool keeps freed pages before returning them (ms)
DECODE_POOL_DECAY_MS = 5000


def use_decode_pool() -> str:
    """Make Arrow's jemalloc pool the default (when this pyarrow has it and ``ARROW_DEFAULT_MEMORY_POOL`` is unset).

    Arrow's readers allocate from the default pool and take no pool argument.
    Decoding a wide signal file (11392 columns) allocates and frees thousands
    of small column buffers per batch; with the mimalloc default, their pages go
    back to the kernel and are faulted in again: decoding the AIRS-CH0 file of
    the full demo planet took 4.7 s of CPU with mimalloc and 3.1 s with jemalloc.
    Returns the pool's backend name.
    """
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pool = pa.jemalloc_memory_pool()
        except NotImplementedError:      # a pyarrow built without jemalloc: keep its default
            return pa.default_memory_pool().backend_name
        if pa.default_memory_pool().backend_name != pool.backend_name:
            pa.set_memory_pool(pool)
            # keep freed pages for the next batch a while (Arrow's default, 0, returns them to the kernel at once)
            pa.jemalloc_set_decay_ms(DECODE_POOL_DECAY_MS)
    return pa.default_memory_pool().backend_name


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole table (or ``columns``) of one parquet file.

    ``pq.ParquetFile.read`` rather than ``pq.read_table``: the latter goes
    through ``pyarrow.dataset``, whose import pulls in pandas (~0.7 s of every
    run's start-up for a few small calibration maps).
    """
    with pq.ParquetFile(path) as pf:
        return pf.read(columns=columns)


def leading_values(path: Path, name: str, values: np.ndarray) -> np.ndarray:
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


def table_matrix(table: pa.Table, value_type: pa.DataType) -> np.ndarray:
    """The (rows, columns) values of a small all-numeric or all-bool table, cast to ``value_type``.

    Through an Arrow tensor: ``ChunkedArray.to_numpy`` imports pandas (~0.7 s of start-up).
    """
    schema = pa.schema([pa.field(name, value_type) for name in table.column_names])
    batches = table.cast(schema, safe=False).combine_chunks().to_batches()
    if not batches or table.num_columns == 0:
        return np.empty((table.num_rows, table.num_columns), np.float64)
    return np.asarray(batches[0].to_tensor(row_major=True))


def table_to_array(path: Path, table: pa.Table, n_rows: int, n_cols: int, kind: str) -> np.ndarray:
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
            return table_matrix(table, pa.uint8()).astype(bool)
        if all(pa.types.is_integer(t) for t in types):
            arr = table_matrix(table, pa.int64())
            if np.isin(arr, (0, 1)).all():
                return arr.astype(bool)
        raise DataLayoutError(f"{path}: expected bool columns, found {sorted(map(str, types))}")
    if not all(pa.types.is_floating(t) or pa.types.is_integer(t) for t in types):
        raise DataLayoutError(f"{path}: expected numeric (float64) columns, found {sorted(map(str, types))}")
    return table_matrix(table, pa.float64())


@dataclass(frozen=True)
class SignalLayout:
    """How frames are stored in one signal parquet file."""

    rows_per_frame: int  # 1 for the wide layout, H*W for a single-column layout
    n_frames: int
    needs_cast: bool  # integer columns that are not all uint16


def signal_layout(path: Path, instrument: str) -> SignalLayout:
    """Validate a signal file from its parquet metadata (no data read).

    Derived from :func:`file_metadata` and cached per version of the file, as it is:
    a rewritten file is checked again.
    """
    require_file(path, f"{instrument} signal file")
    return _signal_layout_cached(path, instrument, _file_version(path))


def _file_version(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or replaced: size, mtime, inode, ctime (the caches' key)."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def file_metadata(path: Path) -> pq.FileMetaData:
    """The parsed footer of a parquet file, parsed once per version of the file and shared by every reader.

    A full-size AIRS-CH0 signal file has ~250,000 column chunks: its footer
    costs 0.2-0.5 s to parse, and validation, the layout check and the frame
    reader all need it.
    """
    require_file(path, "parquet file")
    return _metadata_cached(path, _file_version(path))


@functools.lru_cache(maxsize=8)
def _metadata_cached(path: Path, version: tuple[int, int, int, int]) -> pq.FileMetaData:
    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataLayoutError(f"{path}: not a readable parquet file ({exc_text(exc)}); "
                              f"expected a parquet file with an intact footer") from None


@functools.lru_cache(maxsize=64)
def _signal_layout_cached(path: Path, instrument: str, version: tuple[int, int, int, int]) -> SignalLayout:
    height, width = FRAME_SHAPE[instrument]
    n_pix = height * width
    md = file_metadata(path)
    try:
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as exc:
        raise DataLayoutError(f"{path}: not a readable parquet file ({exc_text(exc)}); "
                              f"expected a parquet file with an intact footer") from None
    bad = sorted({str(f.type) for f in schema if not pa.types.is_integer(f.type)})
    if bad:
        raise DataLayoutError(f"{path}: signal columns must be integer (uint16 ADC counts), found {bad}")
    n_rows = md.num_rows
    needs_cast = any(f.type != pa.uint16() for f in schema)
    if len(schema) == n_pix:
        return SignalLayout(1, n_rows, needs_cast)
    if len(schema) == 1 and n_rows % n_pix == 0:
        return SignalLayout(n_pix, n_rows // n_pix, needs_cast)
    raise DataLayoutError(f"{path}: expected {n_pix} columns ({instrument} frame {height}x{width} flattened "
                          f"row-major), or one column with a multiple of {n_pix} rows; "
                          f"found {len(schema)} columns x {n_rows} rows")


def iter_row_batches(path: Path, pf: pq.ParquetFile, row_start: int, row_stop: int,
                      batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield record batches covering rows ``[row_start, row_stop)``, skipping unneeded row groups."""
    md = pf.metadata
    bounds = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])])
    groups = [g for g in range(md.num_row_groups) if bounds[g + 1] > row_start and bounds[g] < row_stop]
    if not groups:
        return
    pos = int(bounds[groups[0]])
    batches = pf.iter_batches(batch_size=batch_rows, row_groups=groups, use_threads=False)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            # a damaged page (validate_planet finds these before a run; direct readers learn it here)
            raise DataLayoutError(f"{path}: damaged data after row {pos} ({exc_text(exc)}); "
                                  f"expected intact parquet pages") from None
        if batch is None:
            return
        lo, hi = max(row_start, pos), min(row_stop, pos + batch.num_rows)
        if hi > lo:
            yield batch.slice(lo - pos, hi - lo)
        pos += batch.num_rows
        if pos >= row_stop:
            return


def batch_pixels(path: Path, batch: pa.RecordBatch, cast_schema: pa.Schema | None) -> np.ndarray:
    """Flatten a record batch into a 1-D uint16 pixel stream (frame-major, row-major pixels)."""
    try:
        if cast_schema is not None:
            batch = batch.cast(cast_schema, safe=True)
        return np.asarray(batch.to_tensor(row_major=True)).reshape(-1)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataLayoutError(f"{path}: values that are not uint16 ADC counts ({exc_text(exc)}); "
                              f"expected uint16 values without nulls") from None
