"""The stage YAML files are generated from the config schemas: one source for every default.

``configs/calib/<stage>.yaml`` (what Hydra composes) is the rendering of the
stage's schema (``calib_core/stages/<stage>/config.py``): every key with its
default, its unit and its documentation as a comment.  ``configs/spectramind.yaml``
is the rendering of the run-level sections (``data``, ``runtime``).  A test
fails when a file differs from its rendering; after changing a schema, run::

    python -m calib_core.config.defaults          # rewrite the files
    python -m calib_core.config.defaults --check  # exit 1 and name the files that differ

A profile (``configs/calib/{fast,nominal,strict}.yaml``) holds only what it
changes with respect to these defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from .compose import CONFIG_DIR, DataConfig, RuntimeConfig

__all__ = ["render_run_yaml", "render_stage_yaml", "rendered_files", "main"]

_RUN_DIR_DOC = "run directory (default: runs/<profile>)"


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _comment(f: dataclasses.Field) -> str:
    doc = f.metadata.get("doc") or ""
    if not doc:
        raise ValueError(f"config field '{f.name}' has no doc: every key of a profile is documented")
    unit = f.metadata.get("unit") or ""
    return f"[{unit}] {doc}" if unit else doc


def _lines(obj: Any, depth: int) -> list[str]:
    out = []
    pad = "  " * depth
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:  # {_comment(f)}")
            out.extend(_lines(value, depth + 1))
        else:
            out.append(f"{pad}{f.name}: {_scalar(value)}  # {_comment(f)}")
    return out


def render_stage_yaml(name: str) -> str:
    """The text of ``configs/calib/<name>.yaml``: the stage schema's defaults, units and docs."""
    from ..stages import stage_info, stage_schema

    title = stage_info(name).title
    head = [f"# @package calib.{name}",
            f"# {title}: defaults of calib_core/stages/{name}/config.py (generated: python -m calib_core.config.defaults)"]
    return "\n".join(head + _lines(stage_schema(name)(), 0)) + "\n"


def render_run_yaml() -> str:
    """The text of ``configs/spectramind.yaml``: the run-level sections every profile composes first."""
    head = ["# @package _global_",
            "# Run-level settings shared by every profile: defaults of DataConfig / RuntimeConfig in",
            "# calib_core/config/compose.py (generated: python -m calib_core.config.defaults)"]
    body = ["data:  # the planet the chain runs on", *_lines(DataConfig(), 1),
            "runtime:  # how the chain runs (never changes results)", *_lines(RuntimeConfig(), 1),
            f"run_dir: runs/${{calib.profile}}  # {_RUN_DIR_DOC}"]
    return "\n".join(head + body) + "\n"


def rendered_files(config_dir: Path = CONFIG_DIR) -> dict[Path, str]:
    """Every generated file and its expected text."""
    from ..stages import STAGE_NAMES

    files = {config_dir / "calib" / f"{name}.yaml": render_stage_yaml(name) for name in STAGE_NAMES}
    files[config_dir / "spectramind.yaml"] = render_run_yaml()
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calib_core.config.defaults",
                                     description="write (or --check) the YAML defaults rendered from the schemas")
    parser.add_argument("--check", action="store_true", help="only report the files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    stale = [path for path, text in rendered_files().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path}: differs from its schema; run python -m calib_core.config.defaults", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(rendered_files()[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
