"""The planets of a ``spectramind batch`` output directory, one row each."""

from __future__ import annotations

from pathlib import Path

from ..provenance import PLANET_SCOPE_DIR
from ..stages.errors import DataError
from .compare import _gates_of
from .reading import _confined, read_json, read_qc

__all__ = ["BATCH_COLUMNS", "read_batch"]


#: columns of :func:`read_batch` rows
BATCH_COLUMNS = ("planet_id", "status", "gates", "chi2_red_median", "white_depth_ppm", "white_depth_err_ppm",
                 "z_white", "seconds", "gates_failed", "message")


def read_batch(batch_dir: str | Path) -> list[dict]:
    """One row per planet of a ``spectramind batch`` output directory (``batch_summary.json`` + each ``qc.json``).

    Row keys: :data:`BATCH_COLUMNS` plus ``run_dir``.  ``gates_failed`` lists the failed QC gates
    (``stage/where:name``), ``gates`` is ``"passed/total"``; ``z_white`` (white depth against the
    truth, in sigma) is NaN without labels.

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
    return rows
