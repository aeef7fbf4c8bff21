"""Read, validate and write predicted spectra (``mu``, ``sigma``) and their labels.

Prediction inputs (``spec`` of :func:`read_predictions`):

* a CSV in the Kaggle submission layout ``planet_id, wl_1..wl_N, sigma_1..sigma_N``
  (a submission, or one run's ``depths.csv``, which has the same layout and one row);
* a directory (every ``depths.csv`` below it) or a glob pattern of such CSVs: a batch; a
  ``depths.csv`` in a run directory whose last run did not end ``ok`` (its ``run_state.json``:
  failed, interrupted, running) is skipped and listed in :attr:`Predictions.skipped`;
* ``.npz`` with arrays ``mu`` and ``sigma`` (``(n_planets, n_bins)`` or
  ``(n_bins,)``) and optionally ``ids``;
* ``.pt`` (a ``torch.save`` dict with the same keys) when torch is installed.

Labels are CSVs in the ``train.csv`` / ``train_labels.csv`` layout
``planet_id, wl_1..wl_N``.  Every problem raises :class:`InputError` with one
line naming the file and what is wrong.  Outputs are written atomically, in
the input's format, as ``<input stem>_calibrated.<ext>`` (a batch becomes one
submission-layout CSV); CSV values round-trip exactly (read ``round_trip``, written ``%.17g``).
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# pandas is imported where a CSV is read or written: importing it costs ~0.5-2 s of every run's start-up,
# and a calibration run (the sigma calibration stage off, as in every built-in profile) never needs it

__all__ = [
    "InputError",
    "Predictions",
    "Targets",
    "read_predictions",
    "read_targets",
    "read_wavelengths",
    "align_targets",
    "validate_predictions",
    "write_predictions",
]

log = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_LISTED = 10


class InputError(ValueError):
    """An input file is missing, unreadable or inconsistent; the message names the file and the problem."""

    def __init__(self, where: str | os.PathLike, problem: str):
        self.where, self.problem = str(where), problem
        super().__init__(f"{where}: {problem}")


@dataclass
class Predictions:
    """Predicted spectra of ``n_planets`` planets and where they came from."""

    mu: np.ndarray                   #: float64 (n_planets, n_bins)
    sigma: np.ndarray                #: float64 (n_planets, n_bins), > 0
    ids: np.ndarray | None           #: int64 (n_planets,) planet ids, or None (npz/pt without ids)
    source: str                      #: the path or pattern as given
    kind: str                        #: "csv" | "batch" | "npz" | "pt"
    files: list[Path] = field(default_factory=list)   #: files read (several for a batch)
    skipped: list[str] = field(default_factory=list)  #: batch files left out, each with why (run not ok)

    @property
    def n_planets(self) -> int:
        return int(self.mu.shape[0])

    @property
    def output_name(self) -> str:
        """``<input stem>_calibrated.<ext>`` (a batch: directory name or common file stem, ``.csv``)."""
        ext = "csv" if self.kind in ("csv", "batch") else self.kind
        return f"{self._stem()}_calibrated.{ext}"

    def _stem(self) -> str:
        if self.kind != "batch":
            return self.files[0].stem
        source = Path(self.source)
        if source.is_dir():
            return source.resolve().name
        stems = {f.stem for f in self.files}
        return stems.pop() if len(stems) == 1 else "predictions"


@dataclass
class Targets:
    """True spectra from a label file."""

    ids: np.ndarray                  #: int64 (n_planets,)
    y: np.ndarray                    #: float64 (n_planets, n_bins)
    path: Path


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _first_bad(mask: np.ndarray, ids: np.ndarray | None) -> str:
    row, col = np.argwhere(mask)[0]
    planet = f"planet {ids[row]}" if ids is not None else f"row {row}"
    return f"{int(mask.sum())} value(s), first at {planet} bin {col} (column {col + 1})"


def _check_ids(ids: np.ndarray | None, where: str, n_planets: int) -> None:
    if ids is None:
        return
    if ids.shape != (n_planets,):
        raise InputError(where, f"ids has shape {ids.shape}, expected ({n_planets},) (one per planet)")
    values, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        dup = ", ".join(str(v) for v in values[counts > 1][:_MAX_LISTED])
        raise InputError(where, f"duplicate planet ids: {dup}")


def validate_predictions(mu: np.ndarray, sigma: np.ndarray, ids: np.ndarray | None, where: str,
                         n_bins: int) -> None:
    """Check shapes, finiteness, ``sigma > 0`` and unique ids.

    Raises
    ------
    InputError
        Naming ``where`` and the first offending planet/bin.
    """
    if mu.ndim != 2 or mu.shape[1] != n_bins or mu.shape[0] < 1:
        raise InputError(where, f"mu has shape {mu.shape}, expected (n_planets, {n_bins}) with {n_bins} bins")
    if sigma.shape != mu.shape:
        raise InputError(where, f"sigma has shape {sigma.shape} but mu has {mu.shape}")
    _check_ids(ids, where, mu.shape[0])
    for name, arr in (("mu", mu), ("sigma", sigma)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(where, f"{name} has non-finite or non-numeric values: {_first_bad(bad, ids)}")
    if np.any(sigma <= 0):
        raise InputError(where, f"sigma must be > 0: {_first_bad(sigma <= 0, ids)}")


# ---------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path, float_precision="round_trip")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        # pandas' message may quote a line of the file: name the kind of failure only
        raise InputError(path, f"not a readable CSV ({type(exc).__name__})") from None


def _numbered_block(df: pd.DataFrame, prefix: str, n_bins: int, path: Path) -> np.ndarray:
    pattern = re.compile(rf"^{prefix}_(\d+)$")
    found = sorted(int(m.group(1)) for c in df.columns if (m := pattern.match(str(c))))
    if found != list(range(1, n_bins + 1)):
        have = f"{prefix}_1..{prefix}_{found[-1]} ({len(found)} columns)" if found else "none"
        raise InputError(path, f"expected {n_bins} bins in columns {prefix}_1..{prefix}_{n_bins}, found {have}")
    import pandas as pd

    block = df[[f"{prefix}_{i}" for i in range(1, n_bins + 1)]]
    return block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def _csv_ids(df: pd.DataFrame, path: Path) -> np.ndarray:
    if "planet_id" not in df.columns:
        raise InputError(path, "no 'planet_id' column")
    import pandas as pd

    ids = pd.to_numeric(df["planet_id"], errors="coerce")
    if ids.isna().any() or np.any(ids != np.round(ids)):
        raise InputError(path, "planet_id must be integers")
    return ids.to_numpy(dtype=np.int64)


def _read_prediction_csv(path: Path, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = _read_csv(path)
    ids = _csv_ids(df, path)
    mu = _numbered_block(df, "wl", n_bins, path)
    sigma = _numbered_block(df, "sigma", n_bins, path)
    validate_predictions(mu, sigma, ids, str(path), n_bins)
    return ids, mu, sigma


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _read_array_file(path: Path, kind: str, n_bins: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    if kind == "pt":
        torch = _torch()
        if torch is None:
            raise InputError(path, "reading .pt files needs torch, which is not installed; "
                                   "install torch or save the predictions as .npz (mu, sigma, ids)")
        try:
            data = torch.load(path, map_location="cpu")
        except Exception as exc:  # torch raises many unrelated types for a bad file
            raise InputError(path, f"not a readable torch file ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(path, f"expected a dict with mu, sigma[, ids], got {type(data).__name__}")
        arrays = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in data.items()}
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a readable .npz file ({exc})") from None
    missing = [k for k in ("mu", "sigma") if k not in arrays]
    if missing:
        raise InputError(path, f"missing array(s) {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}")
    mu = np.atleast_2d(np.asarray(arrays["mu"], dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(arrays["sigma"], dtype=np.float64))
    ids = None
    if "ids" in arrays:
        raw = np.ravel(arrays["ids"])
        if not np.issubdtype(raw.dtype, np.integer):
            raise InputError(path, f"ids must be integers, got dtype {raw.dtype}")
        ids = raw.astype(np.int64)
    validate_predictions(mu, sigma, ids, str(path), n_bins)
    return ids, mu, sigma


def _batch_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.rglob("depths.csv"))
        if not files:
            raise InputError(path, "no depths.csv below this directory")
        return files
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise InputError(spec, "no file matches this pattern")
    others = [f for f in files if f.suffix.lower() != ".csv"]
    if others:
        raise InputError(others[0], "a batch pattern may only match .csv files (depths.csv / submissions)")
    return files


def _not_ok(files: list[Path]) -> tuple[list[Path], list[str]]:
    """Files of run directories whose last run ended ``ok`` (or that are no run directory), and the rest.

    A run directory says how its last run ended in ``run_state.json``
    (:func:`calib_core.rundir.run_status`); a ``depths.csv`` next to a failed,
    interrupted or still running run is not that run's result.
    """
    from ..rundir import STATE_NAME, run_status

    keep, skipped = [], []
    for f in files:
        status = run_status(f.parent) if (f.parent / STATE_NAME).exists() else None
        if (f.parent / STATE_NAME).exists() and status != "ok":
            skipped.append(f"{f}: skipped, the run in {f.parent} ended {status!r} (run_state.json), not 'ok'")
            log.warning("%s", skipped[-1])
        else:
            keep.append(f)
    return keep, skipped


def _read_batch(spec: str, n_bins: int) -> Predictions:
    files, skipped = _not_ok(_batch_files(spec))
    if not files:
        raise InputError(spec, f"no depths.csv of a successful run: {len(skipped)} skipped ({skipped[0]})")
    parts = [_read_prediction_csv(f, n_bins) for f in files]
    ids = np.concatenate([p[0] for p in parts])
    where = f"{spec} ({len(files)} files)"
    values, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        dup = int(values[counts > 1][0])
        owners = [str(f) for f, p in zip(files, parts, strict=True) if dup in p[0]]
        raise InputError(where, f"planet {dup} appears in several files: {', '.join(owners[:_MAX_LISTED])}")
    return Predictions(np.vstack([p[1] for p in parts]), np.vstack([p[2] for p in parts]), ids, spec,
                       "batch", files, skipped)


def read_predictions(spec: str | os.PathLike, n_bins: int = 283) -> Predictions:
    """Read predictions from a CSV, ``.npz``, ``.pt``, a directory of runs or a glob of CSVs.

    Parameters
    ----------
    spec : str or path
        File, directory (every ``depths.csv`` below it) or glob pattern.
    n_bins : int
        Expected number of spectral bins.

    Raises
    ------
    InputError
        Missing/unreadable file, wrong layout, non-finite values, ``sigma <= 0``
        or duplicate ids.
    """
    spec = str(spec)
    path = Path(spec)
    if path.is_dir() or (_GLOB_CHARS.search(spec) and not path.exists()):
        return _read_batch(spec, n_bins)
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        ids, mu, sigma = _read_prediction_csv(path, n_bins)
        return Predictions(mu, sigma, ids, spec, "csv", [path])
    if suffix in (".npz", ".pt"):
        ids, mu, sigma = _read_array_file(path, suffix[1:], n_bins)
        return Predictions(mu, sigma, ids, spec, suffix[1:], [path])
    raise InputError(path, f"unsupported format '{suffix}'; use .csv (submission or depths.csv), .npz, .pt, "
                           "a directory of runs or a glob of CSVs")


def read_targets(path: str | os.PathLike, n_bins: int = 283) -> Targets:
    """Read labels in the ``train.csv`` layout (``planet_id, wl_1..wl_N``).

    Raises
    ------
    InputError
        Missing file, wrong layout, non-finite labels or duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix.lower() != ".csv":
        raise InputError(path, "labels must be a CSV with planet_id, wl_1..wl_N (train.csv layout)")
    df = _read_csv(path)
    ids = _csv_ids(df, path)
    y = _numbered_block(df, "wl", n_bins, path)
    _check_ids(ids, str(path), len(ids))
    bad = ~np.isfinite(y)
    if bad.any():
        raise InputError(path, f"labels have non-finite or non-numeric values: {_first_bad(bad, ids)}")
    return Targets(ids, y, path)


def read_wavelengths(path: str | os.PathLike, n_bins: int = 283) -> np.ndarray:
    """Bin wavelengths (um) from the dataset's ``wavelengths.csv`` (one row, ``wl_1..wl_N``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    df = _read_csv(path)
    if len(df) != 1:
        raise InputError(path, f"expected one row of wavelengths, found {len(df)}")
    wl = _numbered_block(df, "wl", n_bins, path)[0]
    if not np.all(np.isfinite(wl)) or np.any(wl <= 0):
        raise InputError(path, "wavelengths must be finite and > 0")
    return wl


def align_targets(preds: Predictions, targets: Targets) -> np.ndarray:
    """Labels in the row order of ``preds``.

    Predictions without ids are matched by row order, which needs the same
    number of planets in both files.

    Raises
    ------
    InputError
        Planet ids of the predictions without labels (listed), or row counts
        that differ when the predictions have no ids.
    """
    if preds.ids is None:
        if len(targets.ids) != preds.n_planets:
            raise InputError(preds.source, f"has no ids and {preds.n_planets} planets, but {targets.path} has "
                                           f"{len(targets.ids)}; add an 'ids' array to match planets")
        return targets.y
    index = {int(pid): row for row, pid in enumerate(targets.ids)}
    missing = [int(pid) for pid in preds.ids if int(pid) not in index]
    if missing:
        listed = ", ".join(map(str, missing[:_MAX_LISTED])) + (" ..." if len(missing) > _MAX_LISTED else "")
        raise InputError(targets.path, f"no labels for {len(missing)} planet id(s) of {preds.source}: {listed}")
    return targets.y[[index[int(pid)] for pid in preds.ids]]


# ---------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------


def _submission_frame(ids: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    n_bins = mu.shape[1]
    columns = {"planet_id": ids}
    columns.update({f"wl_{i + 1}": mu[:, i] for i in range(n_bins)})
    columns.update({f"sigma_{i + 1}": sigma[:, i] for i in range(n_bins)})
    return pd.DataFrame(columns)


def write_predictions(preds: Predictions, mu: np.ndarray, sigma: np.ndarray, out_dir: str | os.PathLike,
                      scale: np.ndarray) -> Path:
    """Write calibrated predictions in the input's format as ``out_dir/<stem>_calibrated.<ext>``.

    Parameters
    ----------
    preds : Predictions
        The input (format, name and ids).
    mu, sigma : ndarray, shape (n_planets, n_bins)
        Calibrated values.
    out_dir : path
        Output directory (created).
    scale : ndarray, shape (n_bins,)
        Applied sigma scale, stored in ``.npz`` / ``.pt`` outputs.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(out_dir) / preds.output_name
    if preds.kind in ("csv", "batch"):
        atomic_write_text(path, _submission_frame(preds.ids, mu, sigma).to_csv(index=False, float_format="%.17g"))
        return path
    arrays = {"mu": mu, "sigma": sigma, "scale": scale}
    if preds.ids is not None:
        arrays["ids"] = preds.ids
    buffer = io.BytesIO()
    if preds.kind == "npz":
        np.savez(buffer, **arrays)
    else:
        torch = _torch()            # present: the .pt input was read with it
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path
