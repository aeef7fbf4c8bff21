"""What a planet's run directory keeps after a batch, and whether it holds a finished run."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["KEEP_CHOICES", "check_complete", "prune_run_dir"]


#: what a successful planet's run directory keeps (see :func:`prune_run_dir`)
KEEP_CHOICES = ("all", "series", "depths")


#: detector stages whose frame planes ``keep="series"`` removes
FRAME_STAGES = ("adc", "dark", "flat", "cds")


FRAME_PLANES = ("data.npy", "var.npy", "dq.npy")


#: the files ``keep="depths"`` leaves (``depths_calibrated.csv`` is a submission row too, when written)
RUN_FILES = ("depths.csv", "depths_calibrated.csv", "qc.json", "config.yaml", "run_hash_summary.json", "run_state.json",
             "debug_log.md")


def check_complete(run_dir: str | Path, config_hash: str, planet_id: int | None = None) -> tuple[bool, str]:
    """Whether ``run_dir`` holds a finished, successful run of this config; ``(complete, reason)``.

    Complete means: the run directory's state (:func:`calib_core.rundir.run_status`) is ``ok`` -- a
    later run marks it ``running`` before anything else and removes ``depths.csv``, so an interrupted
    or failed run is never taken for a finished one -- ``run_hash_summary.json`` has the same
    ``config_hash`` (and planet), and ``depths.csv`` exists.  Pruning (:func:`prune_run_dir`) keeps
    all of these files.
    """
    import json

    from ..rundir import run_status

    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status != "ok":
        return False, f"previous run status {status!r}"
    try:
        summary = json.loads((run_dir / "run_hash_summary.json").read_text())
    except (OSError, ValueError) as exc:
        return False, f"no readable run_hash_summary.json ({type(exc).__name__})"
    if summary.get("config_hash") != config_hash:
        return False, "previous run has another config hash"
    if planet_id is not None and (summary.get("planet") or {}).get("planet_id") != planet_id:
        return False, "previous run is of another planet"
    if not (run_dir / "depths.csv").is_file():
        return False, "depths.csv missing"
    return True, f"complete run for config {config_hash[:12]}"


def _inside(path: Path, root: Path) -> bool:
    """``path`` (not followed if it is a link itself) lies inside ``root``."""
    try:
        return path.parent.resolve().is_relative_to(root)
    except OSError:
        return False


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _remove(path: Path, root: Path) -> int:
    """Remove a file, link or directory tree inside ``root`` (links are removed, never followed); bytes freed."""
    if not os.path.lexists(path):
        return 0
    if not _inside(path, root):
        log.warning("not pruning %s: it lies outside the run directory %s", path, root)
        return 0
    if path.is_dir() and not path.is_symlink():
        size = _tree_bytes(path)
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size
    path.unlink()
    return size


def prune_run_dir(run_dir: str | Path, keep: str) -> int:
    """Remove what a finished planet does not need to keep; returns the bytes removed.

    ``keep``:

    * ``"all"``: nothing removed.
    * ``"series"``: the frame planes ``data.npy``, ``var.npy``, ``dq.npy`` of
      ``calib/{adc,dark,flat,cds}/<instrument>/`` and ``.scratch/``; the
      stages' ``meta.json``, metrics and small maps stay, and so do the
      series-level outputs (photometry, trace, phase, depths, top_level_calib).
      A pruned frame stage no longer loads as a cached output, so a later run
      with a changed config recomputes it instead of reading missing planes.
    * ``"depths"``: only :data:`RUN_FILES` (depths.csv, qc.json, config.yaml,
      run_hash_summary.json, debug_log.md, and depths_calibrated.csv if written).

    Every removed path lies inside ``run_dir``; symbolic links are removed, never followed.
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"--keep {keep!r}: must be one of {', '.join(KEEP_CHOICES)}")
    root = Path(run_dir).resolve()
    if keep == "all" or not root.is_dir():
        return 0
    freed = 0
    if keep == "depths":
        for entry in sorted(root.iterdir()):
            if entry.name not in RUN_FILES:
                freed += _remove(entry, root)
        return freed
    calib = root / "calib"
    for stage in FRAME_STAGES:
        stage_dir = calib / stage
        if stage_dir.is_symlink() or not stage_dir.is_dir() or not _inside(stage_dir, root):
            continue
        for inst_dir in sorted(stage_dir.iterdir()):
            if inst_dir.name.startswith(".") or inst_dir.is_symlink() or not inst_dir.is_dir():
                continue
            for name in FRAME_PLANES:
                freed += _remove(inst_dir / name, root)
    freed += _remove(root / ".scratch", root)
    return freed
