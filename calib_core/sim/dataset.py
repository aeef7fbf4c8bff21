"""Adding a planet to a dataset root without damaging its other planets.

Under an exclusive lock on the root: the shared files must agree with the
ones other planets read, the planet's rows are merged into the dataset CSVs,
and every file is replaced atomically, the planet directory last.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.csv_tables import parse_planet_id, read_csv
from ..io.layout import DataLayoutError
from ..store import atomic_write_text

__all__ = ["check_out_dir", "dataset_lock", "other_planets", "shared_file_plan", "move_into_place"]


_SHARED_FILES = ("axis_info.parquet", "adc_info.csv", "wavelengths.csv")  #: one per dataset, shared by its planets


def _row_files(split: str) -> list[str]:
    """Dataset-level CSVs holding one row per planet of ``split``."""
    return (["train.csv"] if split == "train" else []) + [f"{split}_star_info.csv"]


def _is_dataset(out: Path) -> bool:
    names = {*_SHARED_FILES, "train", "test", "train.csv", "train_star_info.csv", "test_star_info.csv"}
    return any((out / name).exists() for name in names)


def other_planets(out: Path, split: str, planet_id: int) -> list[str]:
    """``split/id`` of every planet directory in ``out`` except the one being written."""
    found = []
    for s in ("train", "test"):
        if (out / s).is_dir():
            found += [f"{s}/{p.name}" for p in (out / s).iterdir()
                      if p.name.isdigit() and not (s == split and int(p.name) == planet_id)]
    return sorted(found)


def check_out_dir(out: Path, overwrite: bool, planet_id: int, split: str) -> None:
    """Refuse to replace an existing planet without ``overwrite`` or to write into a non-dataset directory."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"demo output {out} exists and is not a directory")
    if not out.is_dir() or overwrite:
        return
    mine = [p for p in (out / split / str(planet_id), out / "truth" / str(planet_id)) if os.path.lexists(p)]
    if mine:
        raise FileExistsError(f"demo output directory {out} is not empty: planet {planet_id} exists ({mine[0]}); "
                              f"pass overwrite=True (make-demo --overwrite) to replace it")
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".tmp-"))
    if entries and not _is_dataset(out):
        raise FileExistsError(f"demo output directory {out} is not empty (found {entries[:5]}) and not a dataset "
                              f"root; pass overwrite=True (make-demo --overwrite) to write the demo files into it")


@contextlib.contextmanager
def dataset_lock(out: Path):
    """Exclusive lock on the dataset root directory while its dataset-level files are merged and written."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                     # releases the lock


def _same_table(new: Path, old: Path) -> bool:
    """Two ``axis_info.parquet`` files hold the same columns and values (NaN padding included)."""
    a, b = pq.read_table(new), pq.read_table(old)
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    return all(np.array_equal(a.column(c).to_numpy(zero_copy_only=False).astype(np.float64),
                              b.column(c).to_numpy(zero_copy_only=False).astype(np.float64), equal_nan=True)
               for c in a.column_names)


def _same_csv(new: Path, old: Path) -> bool:
    """Two single-table CSVs have the same header and numerically equal rows."""
    (h1, r1), (h2, r2) = read_csv(new), read_csv(old)
    if h1 != h2 or len(r1) != len(r2):
        return False
    try:
        return all(np.array_equal(np.array(x, np.float64), np.array(y, np.float64)) for x, y in zip(r1, r2))
    except ValueError:
        return False


def _axis_frames(path: Path) -> str:
    """'n AIRS-CH0 / m FGS1 frames' of an axis_info file, for messages."""
    table = pq.read_table(path)
    counts = []
    for inst in ("AIRS-CH0", "FGS1"):
        col = f"{inst}-axis0-h"
        if col in table.column_names:
            values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            counts.append(f"{int(np.isfinite(values).sum())} {inst}")
    return " / ".join(counts) + " frames"


def shared_file_plan(tmp: Path, out: Path, others: list[str]) -> list[str]:
    """Names of the shared files to write; refuse when one would change what other planets read."""
    plan = []
    for name in _SHARED_FILES:
        new, old = tmp / name, out / name
        if not os.path.lexists(old) or not others:
            plan.append(name)            # absent, or used by no other planet: (re)written
            continue
        try:
            same = _same_table(new, old) if name.endswith(".parquet") else _same_csv(new, old)
        except (DataLayoutError, pa.ArrowException, OSError, ValueError) as exc:
            raise DataLayoutError(f"{old}: unreadable ({str(exc).splitlines()[0][:200]}) and shared with planets "
                                  f"{', '.join(others[:5])}; expected a readable file (nothing was written)") from None
        if not same:
            detail = (f"holds {_axis_frames(old)}, the new planet needs {_axis_frames(new)}"
                      if name.endswith(".parquet") else "differs from the values the new planet needs")
            raise DataLayoutError(f"{old}: {detail}; expected the same {name} for every planet of the dataset "
                                  f"(shared with {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}): "
                                  f"use the same number of pairs, or another root (nothing was written)")
    return plan


def _merged_rows(tmp: Path, out: Path, name: str, planet_id: int, overwrite: bool) -> str:
    """Text of dataset CSV ``name``: the existing rows of other planets plus the new planet's row."""
    header, new_rows = read_csv(tmp / name)
    old_path = out / name
    if not os.path.lexists(old_path):
        rows = new_rows
    else:
        old_header, old_rows = read_csv(old_path)          # a corrupt file is refused, never rewritten
        if old_header != header:
            raise DataLayoutError(f"{old_path}: columns {old_header[:4]}... differ from the demo's "
                                  f"{header[:4]}...; expected the Kaggle columns (nothing was written)")
        idx = header.index("planet_id")
        keep = []
        for row in old_rows:
            if parse_planet_id(old_path, row, idx) == planet_id:
                if not overwrite:
                    raise DataLayoutError(f"{old_path}: line {row.line} already holds planet_id {planet_id}; "
                                          f"expected no row for a new planet (pass overwrite=True, "
                                          f"make-demo --overwrite, to replace it)")
                continue
            keep.append(row)
        rows = keep + new_rows
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` to ``dest``; an existing ``dest`` is moved aside first and deleted after."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if os.path.lexists(dest):
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def move_into_place(tmp: Path, out: Path, planet_id: int, split: str, overwrite: bool) -> None:
    """Merge the generated planet into the dataset ``out`` without damaging its other planets.

    Under an exclusive lock on ``out``: shared files (axis_info, adc_info, wavelengths) must
    equal the existing ones when other planets use them (else DataLayoutError, nothing written);
    the planet's rows are added to ``train.csv`` / ``<split>_star_info.csv`` (replacing its old
    row with ``overwrite``); every file is replaced atomically, the planet directory last.
    """
    with dataset_lock(out):
        others = other_planets(out, split, planet_id)
        shared = shared_file_plan(tmp, out, others)
        merged = {name: _merged_rows(tmp, out, name, planet_id, overwrite) for name in _row_files(split)}
        _replace_dir(tmp / "truth" / str(planet_id), out / "truth" / str(planet_id))
        for name in shared:
            os.replace(tmp / name, out / name)
        for name, text in merged.items():
            atomic_write_text(out / name, text)
        _replace_dir(tmp / split / str(planet_id), out / split / str(planet_id))
