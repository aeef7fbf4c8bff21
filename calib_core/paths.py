"""Files a profile names (:attr:`StageInfo.reads_files`), resolved and confined to where they may live.

A profile may name a few files the engine reads (``calib.top_level_calib.model_path``,
``calib.top_level_calib.wavelengths_path``, ``calib.dark.per_pixel_map.path``).  Such a value can come
from the command line, an uploaded profile or a box in the app, so it is resolved (``~``, symlinks
followed; a relative path is taken against the data root) and must lie under

* the data root (``data.root``; the demo dataset's directory when it is null),
* the run directory, or
* the project's ``configs/`` directory.

Anything else is refused with one message that is the same whether the file exists or not, and
nothing of it is read.  The runner confines the files before any stage runs (and hands the stages the
resolved paths); the cache key (:func:`calib_core.plan.stage_inputs`) hashes the content of the
same resolved files; the app checks every value typed or uploaded with the same function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config.base import ConfigError
from .config.compose import CONFIG_DIR, RESERVED_CALIB_KEYS

__all__ = ["CONFINED", "allowed_roots", "confine_file", "config_files", "data_root_of"]

#: what a refused file value is told (identical for existing and missing files)
CONFINED = "must be a file under the data root, the run directory or configs/"


def data_root_of(cfg: DictConfig) -> Path:
    """The data root a profile reads: ``data.root``, or the demo dataset's directory when it is null."""
    root = OmegaConf.select(cfg, "data.root")
    if root is None:
        from .sim.demo import demo_path

        return demo_path(int(OmegaConf.select(cfg, "data.demo_seed", default=0) or 0))
    return Path(str(root)).expanduser()


def allowed_roots(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The resolved directories under which a profile's files may lie (data root, run dir, ``configs/``)."""
    run = run_dir if run_dir is not None else OmegaConf.select(cfg, "run_dir")
    roots = [data_root_of(cfg), CONFIG_DIR]
    if run is not None:
        roots.append(Path(str(run)).expanduser())
    return tuple(Path(os.path.realpath(r)) for r in roots)


def _under(path: str, root: Path) -> bool:
    base = str(root).rstrip(os.sep)
    return path == base or path.startswith(base + os.sep)


def confine_file(key: str, value: Any, cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> Path:
    """The resolved path of file value ``value`` of ``key``, refused unless it lies under an allowed root.

    Parameters
    ----------
    key : str
        Full dotted key, e.g. ``"calib.dark.per_pixel_map.path"`` (named in the message).
    value : str or os.PathLike
        The configured path; relative paths are taken against the data root.
    cfg : DictConfig
        The profile (its ``data`` section and ``run_dir``).
    run_dir : path, optional
        The run directory (default: ``cfg.run_dir``).

    Raises
    ------
    ConfigError
        ``<key> = '<value>': must be a file under the data root, the run directory or configs/`` -- the
        same line whether the file exists or not.
    """
    refused = ConfigError(key, str(value), CONFINED)
    text = str(value)
    if not text.strip() or "\x00" in text:
        raise refused
    raw = Path(text).expanduser()
    candidate = raw if raw.is_absolute() else data_root_of(cfg) / raw
    try:
        real = os.path.realpath(candidate)
    except (OSError, ValueError, RuntimeError):
        raise refused from None
    if not any(_under(real, root) for root in allowed_roots(cfg, run_dir)):
        raise refused
    if os.path.exists(real) and not os.path.isfile(real):
        raise ConfigError(key, str(value), "not a file")
    return Path(real)


def config_files(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Every file the profile's stage sections name, confined (see :func:`confine_file`), by full key.

    Stage sections whose value is null or empty name no file.  Disabled stages are checked too: a value
    that points outside is refused wherever it sits.

    Raises
    ------
    ConfigError
        The first file value that is refused.
    """
    from .stages import STAGE_NAMES, stage_info

    out: dict[str, Path] = {}
    calib = cfg.get("calib") or {}
    for name in calib.keys():
        if name in RESERVED_CALIB_KEYS or name not in STAGE_NAMES:
            continue
        for sub in stage_info(str(name)).reads_files:
            value = OmegaConf.select(calib[name], sub, default=None)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            out[f"calib.{name}.{sub}"] = confine_file(f"calib.{name}.{sub}", value, cfg, run_dir)
    return out
