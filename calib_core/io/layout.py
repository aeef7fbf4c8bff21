"""The Kaggle layout's fixed names and shapes, and the paths of a dataset: listing, confinement, errors.

Every path the reader opens is resolved and confined to the dataset root
(:func:`resolves_inside`); every layout problem is a :class:`DataLayoutError`
naming the file (or key) and what was expected versus found.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INSTRUMENTS", "FRAME_SHAPE", "FULL_FRAMES", "AIRS_CROP", "N_TARGETS", "FGS_READ_EXPTIME_S",
           "CALIBRATION_NAMES", "N_LINEAR_COEFFS", "DataLayoutError", "list_planets"]


INSTRUMENTS = ("FGS1", "AIRS-CH0")
FRAME_SHAPE = {"FGS1": (32, 32), "AIRS-CH0": (32, 356)}
FULL_FRAMES = {"FGS1": 135000, "AIRS-CH0": 11250}
AIRS_CROP = (39, 321)  # detector columns kept for the 282 AIRS targets (stop exclusive)
N_TARGETS = 283  # wl_1 (FGS1) + 282 AIRS-CH0 bins
FGS_READ_EXPTIME_S = (0.1, 0.2)  # cumulative integration at the first / second FGS1 read (reference convention)
CALIBRATION_NAMES = ("dark", "dead", "flat", "read", "linear_corr")
N_LINEAR_COEFFS = 6  # linear_corr holds c0..c5 of the inverse non-linearity polynomial
AXIS_FILE = "axis_info.parquet"
WAVELENGTH_FILE = "wavelengths.csv"
ADC_FILE_2025 = "adc_info.csv"


class DataLayoutError(ValueError):
    """The files on disk do not match the Kaggle layout.

    The message always names the offending file (full path) or key, and states
    what was expected and what was found.
    """


def check_instrument(instrument: str) -> None:
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")


def exc_text(exc: BaseException) -> str:
    """First line of an exception's message (no class name), at most 200 characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text[:200] + ("..." if len(text) > 200 else "")


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataLayoutError(f"{what} not found: expected file {path}")
    return path


def resolves_inside(root: Path, path: Path, what: str) -> Path:
    """``path``, refused when it (or a directory on the way) is a symlink leading outside ``root``.

    The message is the same whether the link target exists or not.
    """
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        raise DataLayoutError(f"{path}: {what} resolves outside the dataset root {base}; "
                              f"expected a path inside the dataset root")
    return path


def _split_dir(root: str | Path, split: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"dataset root not found: expected a directory at {root}")
    split_dir = resolves_inside(root, root / split, "split directory")
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataLayoutError(f"split directory not found: expected {split_dir}, found directories {found}")
    return split_dir


def list_planets(root: str | Path, split: str = "train") -> list[int]:
    """Sorted planet ids of ``split`` (the integer-named directories under ``<root>/<split>``).

    A planet directory that is a symlink leading outside ``root`` is refused
    (:class:`DataLayoutError`, the same message whether its target exists or not).
    """
    split_dir = _split_dir(root, split)
    ids = []
    for p in split_dir.iterdir():
        if p.name.isdigit():
            resolves_inside(root, p, "planet directory")
            if p.is_dir():
                ids.append(int(p.name))
    return sorted(ids)


def detect_year(directory: Path, visit: int) -> int:
    """2025 if ``<inst>_signal_<visit>.parquet`` exists, 2024 if ``<inst>_signal.parquet`` does."""
    if any((directory / f"{inst}_signal_{visit}.parquet").is_file() for inst in INSTRUMENTS):
        return 2025
    if visit == 0 and any((directory / f"{inst}_signal.parquet").is_file() for inst in INSTRUMENTS):
        return 2024
    found = sorted(p.name for p in directory.iterdir())
    raise DataLayoutError(f"no signal file for visit {visit} in {directory}: expected "
                          f"'<instrument>_signal_{visit}.parquet' (2025) or '<instrument>_signal.parquet' (2024) "
                          f"for an instrument in {INSTRUMENTS}, found {found}")


def as_planet_id(value: Any) -> int:
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
