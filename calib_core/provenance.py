"""Provenance of a run: input checksums, code hashes, package versions, git commit, the run's record files.

Everything a reader needs to trust or reproduce a run directory (README, "Outputs"):
``run_hash_summary.json`` (config hash, sha256 of every input file, each stage's
cache key, versions, git commit), ``qc.json`` (every stage's metrics and gates),
``run_state.json``, ``debug_log.md`` (one line per run) and, for an ``ok`` run only,
``depths.csv``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .io.layout import CALIBRATION_NAMES, DataLayoutError
from .rundir import STATE_NAME
from .store import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from .chain import RunResult
    from .config.compose import ValidatedConfig

__all__ = ["PLANET_SCOPE_DIR", "code_hash", "git_commit", "input_checksums", "versions", "write_depths_csv",
           "write_run_files"]

PLANET_SCOPE_DIR = "planet"   #: directory name used in place of an instrument for planet-scope stages


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def input_checksums(planet: Any, instruments: list[str]) -> dict[str, str]:
    """sha256 of the content of every input file of the visit (read in full at every run: no mtime shortcut).

    Raises
    ------
    DataLayoutError
        An input file is missing.
    """
    files: dict[str, Path] = {}
    for inst in instruments:
        files[f"{inst}/signal"] = planet.signal_path(inst)
        for name in CALIBRATION_NAMES:
            files[f"{inst}/{name}"] = planet.calibration_dir(inst) / f"{name}.parquet"
    for name, p in planet.metadata_paths().items():
        files[name] = Path(p)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataLayoutError(f"{missing[0]}: input file not found" + (f" (and {len(missing) - 1} more)"
                                                                       if len(missing) > 1 else ""))
    return {name: _sha256(p) for name, p in sorted(files.items())}


@functools.lru_cache(maxsize=None)
def code_modules(module_name: str) -> tuple[str, ...]:
    """``module_name`` and every ``calib_core`` module it uses, directly or through another (sorted names).

    A module is used when one of its globals is that module or was defined there
    (functions, classes, compiled kernels), e.g. a stage's algorithm modules,
    ``calib_core.stages.pixels``, ``calib_core.robust``.
    """
    seen: set[str] = set()
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in vars(sys.modules[name]).values():
            dep = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(dep, str) and dep.startswith("calib_core.") and dep in sys.modules and dep not in seen:
                todo.append(dep)
    return tuple(sorted(seen))


def code_hash(stage_obj: Any) -> str:
    """Hash of the source of a stage's module and of every ``calib_core`` module it uses.

    Part of every cache key: a change to the stage, to a kernel or to a shared
    helper invalidates the outputs computed with the old code.
    """
    h = hashlib.sha256()
    for name in code_modules(inspect.getmodule(stage_obj).__name__):
        h.update(name.encode())
        h.update(inspect.getsource(sys.modules[name]).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {}
    for pkg in ("spectramind", "numpy", "scipy", "astropy", "pyarrow", "omegaconf", "hydra-core",
                "batman-package", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def write_depths_csv(path: Path, planet_id: int, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Kaggle submission layout: ``planet_id, wl_1..wl_283, sigma_1..sigma_283`` (one row)."""
    n = len(mu)
    header = ["planet_id", *[f"wl_{i + 1}" for i in range(n)], *[f"sigma_{i + 1}" for i in range(n)]]
    row = [str(planet_id), *[repr(float(v)) for v in mu], *[repr(float(v)) for v in sigma]]
    atomic_write_text(path, ",".join(header) + "\n" + ",".join(row) + "\n")


def _summary_line(result: "RunResult", profile: Any, planet_id: Any, seconds: float) -> str:
    counts: dict[str, int] = {}
    for r in result.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    warn = sum(1 for r in result.records for g in r.gates if not g.passed)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f"{stamp} | profile={profile} | planet={planet_id} | status={result.status}"
            f" | stages " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            + f" | failed_gates={warn} | config={result.config_hash[:12]} | {seconds:.1f}s"
            + (f" | {result.message}" if result.message else ""))


def write_run_files(result: "RunResult", vc: "ValidatedConfig", checksums: dict | None, seconds: float) -> None:
    """Record how the run ended: ``qc.json``, ``run_hash_summary.json``, ``run_state.json``, ``debug_log.md``.

    ``depths.csv`` (and ``depths_calibrated.csv``) are written for an ``ok`` run only.
    """
    run_dir, planet = result.run_dir, result.planet
    qc: dict[str, Any] = {"status": result.status, "message": result.message, "stages": {}}
    for r in result.records:
        qc["stages"].setdefault(r.stage, {})[r.instrument or PLANET_SCOPE_DIR] = r.to_json()
    atomic_write_json(run_dir / "qc.json", qc)
    if result.status == "ok":
        depths = result.output("depths")
        if depths is not None:
            write_depths_csv(run_dir / "depths.csv", planet.planet_id, depths.fields["mu"], depths.fields["sigma"])
        calibrated = result.output("top_level_calib")
        if calibrated is not None and not calibrated.meta.get("metrics", {}).get("skipped"):
            write_depths_csv(run_dir / "depths_calibrated.csv", planet.planet_id,
                             calibrated.fields["mu"], calibrated.fields["sigma"])
    where = None if planet is None else {"root": str(planet.root), "split": planet.split,
                                         "planet_id": planet.planet_id, "visit": planet.visit}
    profile = vc.cfg.calib.get("profile")
    atomic_write_json(run_dir / "run_hash_summary.json", {
        "config_hash": result.config_hash,
        "profile": profile,
        "status": result.status,
        "message": result.message,
        "planet": where,
        "input_checksums": checksums,
        "stage_cache_keys": {f"{r.stage}/{r.instrument or PLANET_SCOPE_DIR}": {"key": r.cache_key,
                                                                              "status": r.status}
                             for r in result.records},
        "versions": dict(versions()),
        "git_commit": git_commit(),
        "seconds": round(seconds, 3),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    atomic_write_json(run_dir / STATE_NAME, {"status": result.status, "message": result.message,
                                             "config_hash": result.config_hash,
                                             "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    # rewritten, never appended in place: a run directory may share inodes with another (hard-linked copies)
    log = run_dir / "debug_log.md"
    previous = log.read_text() if log.is_file() else ""
    planet_id = planet.planet_id if planet is not None else vc.data.planet_id
    atomic_write_text(log, previous + _summary_line(result, profile, planet_id, seconds) + "\n")
