"""A finished run directory read back: its ``qc.json``, stage outputs (paths confined to it), results zip and
the :class:`calib_core.chain.RunResult` rebuilt from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..provenance import PLANET_SCOPE_DIR
from ..stages.errors import DataError
from ..store import StoredOutput, load_output

__all__ = ["RESULT_FILES", "load_result", "load_stage_output", "read_qc", "results_zip"]

log = logging.getLogger(__name__)


def _confined(root: Path, path: str | Path, source: str = "qc.json", what: str = "output directory") -> Path:
    """``path`` resolved; DataError unless it lies inside ``root`` (``source`` named it)."""
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(f"{root / source}: {what} {path} lies outside {root}")
    return resolved


def read_json(path: Path, kind: str) -> Any:
    """The JSON document at ``path``; a missing or unparsable file is a :class:`DataError` naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (not {kind})") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def read_qc(run_dir: str | Path) -> dict:
    """``qc.json`` of a run directory.

    Raises
    ------
    DataError
        No run directory, or its ``qc.json`` is missing or not JSON.
    """
    path = Path(run_dir).expanduser().resolve() / "qc.json"
    qc = read_json(path, "a finished run directory")
    if not isinstance(qc, dict) or not isinstance(qc.get("stages"), dict):
        raise DataError(f"{path}: no 'stages' mapping (expected the qc.json that spectramind calibrate writes)")
    return qc


def load_stage_output(run_dir: str | Path, stage: str, instrument: str | None,
                      qc: dict | None = None) -> StoredOutput:
    """The stored output of ``stage`` for ``instrument`` (None: planet scope) of a run directory.

    Raises
    ------
    DataError
        The run has no such output (stage disabled, skipped or failed) or it cannot be read.
    """
    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root) if qc is None else qc
    where = instrument or PLANET_SCOPE_DIR
    rec = qc["stages"].get(stage, {}).get(where)
    if not rec or not rec.get("output_dir"):
        raise DataError(f"{root}: no {stage} output for {where} (stage disabled, skipped or failed in this run)")
    out = load_output(_confined(root, rec["output_dir"]))
    if out is None:
        raise DataError(f"{rec['output_dir']}: {stage}/{where} output missing or incomplete")
    return out


#: files of a run directory that ``results_zip`` packs when present (depths.csv, qc.json, config.yaml required)
RESULT_FILES = ("depths.csv", "qc.json", "config.yaml", "depths_calibrated.csv", "run_hash_summary.json",
                "run_state.json", "debug_log.md", "audit.html", "audit.json")


def results_zip(run_dir: str | Path) -> bytes:
    """A zip of a finished run's results: ``depths.csv``, ``qc.json``, ``config.yaml`` and, if present, the
    calibrated depths, provenance files and the audit report (``audit.html``/``audit.json``).

    Raises
    ------
    DataError
        A required file is missing (the run did not finish ``ok``).
    """
    import io
    import zipfile

    root = Path(run_dir).expanduser().resolve()
    missing = [n for n in RESULT_FILES[:3] if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root}: no {', '.join(missing)} (results exist after an ok run only)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in RESULT_FILES:
            path = root / name
            if path.is_file():
                zf.write(path, name)
    return buf.getvalue()



def load_result(run_dir: str | Path) -> Any:
    """A :class:`calib_core.chain.RunResult` rebuilt from a finished run directory, to show its diagnostics.

    A stage output that was pruned (e.g. a batch's ``keep: series`` removes the detector frame planes)
    or fails its checksums is listed without an output directory, its ``reason`` saying so.

    Raises
    ------
    DataError
        No ``qc.json``/``config.yaml``, a config that does not validate, or a planet that cannot be opened.
    """
    from ..chain import RunResult, StageRecord, resolve_planet
    from ..config import ConfigError, compose_config, validate_config
    from ..stages.base import Gate
    from ..store import verify_output

    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    try:
        cfg = compose_config(str(root / "config.yaml"))
        vc = validate_config(cfg)
    except ConfigError as exc:
        raise DataError(f"{root / 'config.yaml'}: {exc}") from None
    records = []
    for stage, per in qc["stages"].items():
        for where, rec in per.items():
            out_dir, reason = rec.get("output_dir"), rec.get("reason", "")
            if out_dir:
                problem = verify_output(_confined(root, out_dir))
                if problem is not None:
                    out_dir, reason = None, f"output not kept in this run directory ({problem})"
            try:
                gates = [Gate(**g) for g in rec.get("gates", []) or []]
            except TypeError:
                raise DataError(f"{root / 'qc.json'}: malformed gates of {stage}/{where}") from None
            records.append(StageRecord(stage, None if where == PLANET_SCOPE_DIR else where, rec.get("status", ""),
                                       rec.get("cache_key", ""), float(rec.get("seconds") or 0.0),
                                       rec.get("metrics") or {}, gates, out_dir, reason))
    try:
        planet = resolve_planet(vc)
    except Exception as exc:  # DataLayoutError & co.: the dataset moved or is not readable here
        raise DataError(f"{root}: cannot open the run's planet ({str(exc).splitlines()[0]})") from None
    chash = json.loads((root / "run_hash_summary.json").read_text()).get("config_hash", "") \
        if (root / "run_hash_summary.json").is_file() else ""
    return RunResult(root, str(qc.get("status", "")), chash, records, str(qc.get("message", "")), planet, vc)
