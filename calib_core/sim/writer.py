"""Files of the Kaggle layout other than the signal: calibration maps, CSV tables, ``axis_info.parquet``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.layout import N_TARGETS
from .settings import (ADC_GAIN, ADC_OFFSET, FIRST_READ_EXPTIME_S, SIMS, airs_wavelengths, pair_times_s,
                       target_wavelengths)

__all__ = ["write_calibration", "write_metadata", "write_shared"]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])


def _write_map(path: Path, values: np.ndarray) -> None:
    """Write a 2-D calibration map as ``column_0..`` parquet (ZSTD, no pandas metadata)."""
    table = pa.table({f"column_{j}": values[:, j] for j in range(values.shape[1])})
    pq.write_table(table, path, compression="zstd")


def write_calibration(directory: Path, det: dict) -> None:
    directory.mkdir(parents=True)
    _write_map(directory / "dark.parquet", det["dark"])
    _write_map(directory / "dead.parquet", det["dead"])
    _write_map(directory / "flat.parquet", det["flat_shipped"])
    _write_map(directory / "read.parquet", det["read"])
    _write_map(directory / "linear_corr.parquet", det["linear_corr"].reshape(-1, det["dark"].shape[1]))


def _axis_columns(n_pairs: dict[str, int]) -> dict[str, np.ndarray]:
    """The four ``axis_info.parquet`` columns (float64, NaN-padded to the longest)."""
    airs_t, _ = pair_times_s(n_pairs["AIRS-CH0"])
    fgs_t, _ = pair_times_s(n_pairs["FGS1"])
    integration = np.tile([FIRST_READ_EXPTIME_S, SIMS["AIRS-CH0"].cds_s], n_pairs["AIRS-CH0"])
    cols = {"AIRS-CH0-axis0-h": airs_t / 3600.0, "AIRS-CH0-axis2-um": airs_wavelengths(),
            "AIRS-CH0-integration_time": integration, "FGS1-axis0-h": fgs_t / 3600.0}
    n_rows = max(v.size for v in cols.values())
    return {k: np.concatenate([v, np.full(n_rows - v.size, np.nan)]) for k, v in cols.items()}


def write_metadata(tmp: Path, planet_id: int, split: str, system: dict, spectrum: dict) -> None:
    """The planet's rows: ``train.csv`` (train split) and ``<split>_star_info.csv``, one row each."""
    wl_names = [f"wl_{j}" for j in range(1, N_TARGETS + 1)]
    if split == "train":
        _write_csv(tmp / "train.csv", ["planet_id", *wl_names], [[planet_id, *map(float, spectrum["depth"])]])
    star = system["star"]
    _write_csv(tmp / f"{split}_star_info.csv", ["planet_id", *star], [[planet_id, *map(float, star.values())]])


def write_shared(tmp: Path, n_pairs: dict[str, int]) -> None:
    """The dataset-level files every planet shares: wavelengths.csv, adc_info.csv, axis_info.parquet."""
    wl_names = [f"wl_{j}" for j in range(1, N_TARGETS + 1)]
    _write_csv(tmp / "wavelengths.csv", wl_names, [list(map(float, target_wavelengths()))])
    _write_csv(tmp / "adc_info.csv",
               ["FGS1_adc_offset", "FGS1_adc_gain", "AIRS-CH0_adc_offset", "AIRS-CH0_adc_gain"],
               [[ADC_OFFSET, ADC_GAIN, ADC_OFFSET, ADC_GAIN]])
    pq.write_table(pa.table(_axis_columns(n_pairs)), tmp / "axis_info.parquet", compression="snappy")
