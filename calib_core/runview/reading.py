"""A finished run directory read back: its ``qc.json``, stage outputs (paths confined to it), results zip and
the :class:`calib_core.chain.RunResult` rebuilt from it."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..provenance import PLANET_SCOPE_DIR
from ..stages.errors import DataError
from ..store import StoredOutput, load_output

__all__ = ["RESULT_FILES", "STAGE_ZIP_MAX_BYTES", "load_result", "load_stage_output", "read_qc", "results_zip",
           "save_run", "stage_arrays_zip"]

log = logging.getLogger(__name__)


def _confined(root: Path, path: str | Path, source: str = "qc.json", what: str = "output directory") -> Path:
    """``path`` resolved; DataError unless it lies inside ``root`` (``source`` named it)."""
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(f"{root / source}: {what} {path} lies outside {root}")
    return resolved


def _output_dir(root: Path, recorded: str, stage: str, where: str) -> Path:
    """A stage record's output directory inside ``root``.

    ``qc.json`` records absolute paths; a run directory that was moved or saved elsewhere
    (:func:`save_run`) keeps the runner's layout, ``calib/<stage>/<where>`` or (outputs that keep no
    frame planes) ``.scratch/<stage>/<where>``, so such a path is found again under ``root``.  Any
    other path outside ``root`` is refused.
    """
    path = Path(recorded)
    tail = path.parts[-3:]
    if tail[1:] == (stage, where) and tail[0] in ("calib", ".scratch"):
        resolved = path.expanduser().resolve()
        if resolved != root and root not in resolved.parents:         # recorded elsewhere: moved or saved
            return _confined(root, root / Path(*tail))
    return _confined(root, path)


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
    out = load_output(_output_dir(root, rec["output_dir"], stage, where))
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


#: arrays packed into one stage zip at most (a browser download travels base64 in one websocket message;
#: Bokeh's default limit is 20 MB): larger fields are listed in the zip's ``SKIPPED.txt`` with their path
STAGE_ZIP_MAX_BYTES = 12 * 2**20


def stage_arrays_zip(run_dir: str | Path, stage: str, instrument: str | None,
                     max_bytes: int = STAGE_ZIP_MAX_BYTES) -> tuple[bytes, list[str]]:
    """A zip of one stage output's arrays (``<field>.npy``), ``meta.json`` and ``checksums.json``.

    The output is verified against its checksums first.  Fields are packed smallest first while their
    total stays within ``max_bytes``; the others (frame planes of a full planet: GBs) are not dropped
    silently: ``SKIPPED.txt`` in the zip names each with its size and its path in the run directory.

    Returns
    -------
    (bytes, list of str)
        The zip and the names of the skipped fields.

    Raises
    ------
    DataError
        No such output in the run, or a file that fails its checksum (named).
    """
    import io
    import zipfile

    from ..store import CHECKSUMS_NAME, META_NAME, verify_output

    out = load_stage_output(run_dir, stage, instrument)
    problem = verify_output(out.path)
    if problem is not None:
        raise DataError(f"{out.path}: {problem}")
    files = sorted((Path(out.path) / f"{name}.npy" for name in out.fields), key=lambda p: p.stat().st_size)
    buf, skipped, used = io.BytesIO(), [], 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (META_NAME, CHECKSUMS_NAME):
            zf.write(out.path / name, name)
        for path in files:
            size = path.stat().st_size
            if used + size > max_bytes:
                skipped.append(path.stem)
                continue
            zf.write(path, path.name)
            used += size
        if skipped:
            lines = [f"{p.stem}.npy  {p.stat().st_size / 2**20:.1f} MB  {p}" for p in files if p.stem in skipped]
            zf.writestr("SKIPPED.txt", f"{len(skipped)} field(s) over this download's {max_bytes / 2**20:.0f} MB "
                                       "limit; read them from the run directory:\n" + "\n".join(lines) + "\n")
    return buf.getvalue(), skipped


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
                out_dir = str(_output_dir(root, out_dir, stage, where))
                problem = verify_output(out_dir)
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


_SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


def save_run(run_dir: str | Path, data_root: str | Path, name: str) -> Path:
    """Copy a finished run directory to ``<data_root>/runs/<name>`` so that it outlives an app session.

    The copy is written to a temporary sibling and renamed into place (never half a run); the run's
    lock is not copied.  The saved directory reads back like the original (:func:`load_result`).

    Raises
    ------
    DataError
        ``name`` is not a folder name (letters, digits, ``. _ -``, ``/`` between sub-folders) or it
        exists already, or the run directory has no finished run.
    """
    import shutil
    import uuid

    src = Path(run_dir).expanduser().resolve()
    runs = Path(data_root).expanduser().resolve() / "runs"
    if not isinstance(name, str) or not _SAVE_NAME.fullmatch(name) or ".." in name.split("/"):
        raise DataError(f"save run as {name!r}: expected a folder name under {runs} (letters, digits, '.', '_', "
                        "'-'; '/' between sub-folders)")
    dest = _confined(runs, runs / name, "save_run", "folder")
    state = read_json(src / "run_state.json", "a finished run directory")
    if state.get("status") not in ("ok", "failed"):
        raise DataError(f"{src}: the run is {state.get('status')!r}; save it once it has finished")
    if dest.exists():
        raise DataError(f"save run as {name!r}: {dest} exists; choose another name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".lock", ".*.tmp", ".*.old"))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("run %s saved to %s", src, dest)
    return dest
