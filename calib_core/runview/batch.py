"""The planets of a ``spectramind batch`` output directory, one row each."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..provenance import PLANET_SCOPE_DIR
from ..stages.errors import DataError
from .compare import _gates_of
from .reading import _confined, read_json, read_qc

__all__ = ["BATCH_COLUMNS", "read_batch"]

log = logging.getLogger(__name__)


#: columns of :func:`read_batch` rows
BATCH_COLUMNS = ("planet_id", "status", "gates", "chi2_red_median", "white_depth_ppm", "white_depth_err_ppm",
                 "z_white", "score_2025", "seconds", "gates_failed", "message")


def read_batch(batch_dir: str | Path) -> list[dict]:
    """One row per planet of a ``spectramind batch`` output directory (``batch_summary.json`` + each ``qc.json``).

    Row keys: :data:`BATCH_COLUMNS` plus ``run_dir``.  ``gates_failed`` lists the failed QC gates
    (``stage/where:name``), ``gates`` is ``"passed/total"``; ``z_white`` (white depth against the
    truth, in sigma) is NaN without labels.  ``score_2025`` is the 2025 challenge metric
    (:func:`calib_core.sigma.metrics.challenge_score`) of the planet's ``depths.csv`` against its labels,
    with the naive reference Gaussian of the batch's labelled planets (NaN without labels).

    Raises
    ------
    DataError
        No or malformed ``batch_summary.json``, or a planet run directory outside the batch directory.
    """
    root = Path(batch_dir).expanduser().resolve()
    path = root / "batch_summary.json"
    summary = read_json(path, "a spectramind batch output directory")
    planets = summary.get("planets") if isinstance(summary, dict) else None
    if not isinstance(planets, list):
        raise DataError(f"{path}: no 'planets' list")
    rows = []
    for p in planets:
        pid = p.get("planet_id")
        raw = str(p.get("run_dir") or pid)
        run_dir = _confined(root, raw if Path(raw).is_absolute() else root / raw, "batch_summary.json",
                            "planet run directory")
        row = {"planet_id": pid, "status": p.get("status", ""), "message": p.get("message", ""),
               "seconds": p.get("seconds"), "gates_failed": "", "gates": "", "chi2_red_median": float("nan"),
               "white_depth_ppm": float("nan"), "white_depth_err_ppm": float("nan"), "z_white": float("nan"),
               "run_dir": str(run_dir)}
        try:
            qc = read_qc(run_dir)
        except DataError:
            rows.append(row)
            continue
        gates = _gates_of(qc)
        row["gates"] = f"{sum(bool(g.get('passed')) for g in gates)}/{len(gates)}"
        row["gates_failed"] = ", ".join(f"{g['stage']}/{g['instrument']}:{g['name']}" for g in gates
                                        if not g.get("passed"))
        m = (qc["stages"].get("depths", {}).get(PLANET_SCOPE_DIR) or {}).get("metrics") or {}
        for key, src, scale in (("chi2_red_median", "chi2_red_median", 1.0), ("white_depth_ppm", "white_depth", 1e6),
                                ("white_depth_err_ppm", "white_depth_err", 1e6), ("z_white", "z_white", 1.0)):
            if isinstance(m.get(src), (int, float)):
                row[key] = float(m[src]) * scale
        rows.append(row)
    _score_rows(rows)
    return rows


def _spectrum(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mu, sigma)`` of a run's ``depths.csv`` (283 finite values each), or None."""
    from ..io.csv_tables import read_csv, target_vector

    path = run_dir / "depths.csv"
    try:
        header, rows = read_csv(path)
        return target_vector(path, header, rows[0]), target_vector(path, header, rows[0], prefix="sigma")
    except (ValueError, IndexError):      # DataLayoutError: unreadable or not a submission row
        return None


def _labels(run_dir: Path) -> np.ndarray | None:
    """The truth of the run's planet (its config's dataset, train split), or None."""
    from omegaconf import OmegaConf

    from ..io import open_planet

    try:
        data = OmegaConf.load(run_dir / "config.yaml").data
        if data.root is None or data.planet_id is None:
            return None
        labels = open_planet(data.root, int(data.planet_id), str(data.split)).labels()
    except Exception as exc:  # noqa: BLE001 -- no labels: the score column stays empty, the log says why
        log.info("%s: no labels for the score (%s)", run_dir, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    return None if labels is None or np.size(labels) != 283 else np.asarray(labels, np.float64)


def _score_rows(rows: list[dict]) -> None:
    from ..sigma.metrics import challenge_score

    scored = []
    for row in rows:
        row["score_2025"] = float("nan")
        if row["status"] != "ok":
            continue
        spectrum, labels = _spectrum(Path(row["run_dir"])), _labels(Path(row["run_dir"]))
        if spectrum is not None and labels is not None:
            scored.append((row, labels, *spectrum))
    if not scored:
        return
    y = np.stack([s[1] for s in scored])
    naive = {"naive_mean": float(y.mean()), "naive_sigma": float(y.std())}
    for row, labels, mu, sigma in scored:
        row["score_2025"] = challenge_score(labels, mu, sigma, **naive)
