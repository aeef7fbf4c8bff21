"""The schedule of a profile and what each stage's result depends on (no numerics imported).

One source for three users:

* the runner (:mod:`calib_core.chain`) runs :func:`schedule` and hashes
  :func:`stage_inputs` into every stage's cache key (with its upstream key,
  the input files' checksums and the code);
* :func:`invalidated_by` tells which stages a config change makes stale -- the
  app marks exactly those, so its stale marks can never disagree with the cache;
* the key-walk test checks both against fresh runs.

What a stage depends on is its own config section (without ``cache``,
``logging`` and ``quality_checks``, which never change a result: gates are
re-judged on stored metrics), the config sub-sections and files its
:class:`~calib_core.stages.info.StageInfo` declares, and -- through the chain
-- everything upstream of it, including the declared outputs of other stages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .config.compose import RESERVED_CALIB_KEYS, typed_content
from .stages import stage_info

__all__ = ["NO_RESULT_SECTIONS", "file_digest", "invalidated_by", "regated_by", "schedule", "stage_inputs"]

#: sections of a stage's config that never change its result
NO_RESULT_SECTIONS = ("cache", "logging", "quality_checks")


def _enabled(cfg: DictConfig) -> list[str]:
    from .stages import STAGE_NAMES

    # the engine's execution order, whatever the order of the sections in the profile
    names = sorted((str(k) for k, v in cfg.calib.items() if k not in RESERVED_CALIB_KEYS and v.get("enabled", True)),
                   key=lambda n: STAGE_NAMES.index(n) if n in STAGE_NAMES else len(STAGE_NAMES))
    return names


def schedule(cfg: DictConfig) -> list[tuple[str, str | None]]:
    """``(stage, instrument)`` steps of a (validated) profile in the order the runner runs them.

    Instrument stages run for each instrument of ``data.instruments`` in turn;
    planet stages (instrument ``None``) run once, after all of them.
    """
    enabled = _enabled(cfg)
    inst_stages = [s for s in enabled if stage_info(s).scope == "instrument"]
    planet = [(s, None) for s in enabled if stage_info(s).scope == "planet"]
    return [(s, str(i)) for i in cfg.data.instruments for s in inst_stages] + planet


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content ("missing" when it does not exist)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return "missing"
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _select(tree: dict, path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def stage_inputs(cfg: DictConfig, name: str, run_dir: str | Path | None = None) -> dict:
    """Everything of the config a stage's result depends on, besides its upstream (typed values).

    Its own section without :data:`NO_RESULT_SECTIONS`; each declared config
    sub-section of another stage (``None`` when the profile lacks it); each
    declared file by the sha256 of its content -- the file as
    :func:`calib_core.paths.confine_file` resolves it (``run_dir``: the run
    directory, default ``cfg.run_dir``), so nothing outside the allowed roots is
    ever opened to be hashed.

    Raises
    ------
    calib_core.config.ConfigError
        A declared file lies outside the data root, the run directory and ``configs/``.
    """
    from .paths import confine_file

    info = stage_info(name)
    calib = typed_content(cfg)["calib"]
    own = {k: v for k, v in calib[name].items() if k not in NO_RESULT_SECTIONS}
    out: dict[str, Any] = {"section": own}
    for path in info.reads_config:
        out[f"calib.{path}"] = _select(calib, path)
    for key in info.reads_files:
        value = _select(calib[name], key)
        out[f"file:{key}"] = file_digest(confine_file(f"calib.{name}.{key}", value, cfg, run_dir)) if value else None
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def invalidated_by(old: DictConfig, new: DictConfig, run_dir: str | Path | None = None) -> list[str]:
    """Stages of ``new`` (execution order) whose stored results ``old``'s run cannot serve.

    A stage is invalidated when its :func:`stage_inputs` differ, when an
    upstream stage of its chain is invalidated (every later instrument stage,
    and every planet stage), when a stage whose output it declares reading is
    invalidated, or when the data section or the set of enabled stages changed
    in a way that changes its upstream.  Changes to ``cache``, ``logging`` or
    ``quality_checks`` invalidate nothing.
    """
    data_changed = _digest(typed_content(old)["data"]) != _digest(typed_content(new)["data"])
    old_enabled, new_enabled = _enabled(old), _enabled(new)
    stale: list[str] = []
    chain_broken = data_changed
    for name in new_enabled:
        info = stage_info(name)
        before = stage_inputs(old, name, run_dir) if name in old_enabled else None
        changed = before is None or _digest(before) != _digest(stage_inputs(new, name, run_dir))
        upstream_changed = _upstream(old_enabled, name) != _upstream(new_enabled, name)
        reads_stale = any(s in stale for s in info.reads_outputs)
        if chain_broken or changed or upstream_changed or reads_stale:
            stale.append(name)
            chain_broken = True       # every later stage reads this one's output, directly or not
    return stale


def _upstream(enabled: list[str], name: str) -> tuple[str, ...]:
    return tuple(enabled[:enabled.index(name)]) if name in enabled else ()


def regated_by(old: DictConfig, new: DictConfig) -> list[str]:
    """Stages of ``new`` whose QC gates a change from ``old`` re-judges (their ``quality_checks`` differ).

    Gates are evaluated on the stored metrics at every run, so such a stage is
    not recomputed (see :func:`invalidated_by`); only its verdicts change.
    """
    before, after = typed_content(old)["calib"], typed_content(new)["calib"]
    return [name for name in _enabled(new)
            if name not in before or _digest(before[name]["quality_checks"]) != _digest(after[name]["quality_checks"])]
