"""Compose, normalise and validate a calibration profile.

``compose_config("calib/nominal", ["calib.cds.pairing.window_s=3.0"])``:

1. Hydra composes ``configs/calib/nominal.yaml`` (its defaults list names the
   stage files in execution order) with the overrides.  A path to a YAML file
   (e.g. a profile exported by the app or a run's ``config.yaml``) is accepted
   instead of a profile name.
2. The profile's ``calib.method`` block of dotted keys
   (``photometry.aperture.radius_px: 8``) is applied to the stage sections;
   command-line overrides are then re-applied so they always win; the block is
   emptied so the result is a self-contained profile.
3. Every stage section is merged into its typed schema (unknown keys, wrong
   types), then choices/bounds and the I/O chain are checked.  Nothing reads
   data before this succeeds; every failure is one :class:`ConfigError` line
   naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .base import ConfigError, check_constraints, opt

__all__ = [
    "CONFIG_DIR",
    "DataConfig",
    "RuntimeConfig",
    "ValidatedConfig",
    "compose_config",
    "validate_config",
    "config_to_yaml",
    "config_hash",
    "stage_schema",
    "typed_content",
]

CONFIG_DIR = Path(os.environ.get("SPECTRAMIND_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))
INSTRUMENT_NAMES = ("FGS1", "AIRS-CH0")
RESERVED_CALIB_KEYS = ("profile", "method")
TOP_LEVEL_KEYS = ("calib", "data", "runtime", "run_dir")
#: Hydra's GlobalHydra is process-wide state: one composition at a time (the app composes from several threads)
_HYDRA_LOCK = threading.Lock()


@dataclass
class DataConfig:
    root: Any = opt(None, nullable=True, doc="dataset root in the Kaggle layout; null = the built-in demo planet")
    split: str = opt("train", choices=("train", "test"), doc="dataset split")
    planet_id: Any = opt(None, nullable=True, doc="planet id; null = the first planet of the split")
    visit: int = opt(0, ge=0, doc="observation index (_0, _1)")
    instruments: list = opt(["FGS1", "AIRS-CH0"], choices=INSTRUMENT_NAMES, doc="instruments to calibrate")
    demo_seed: int = opt(0, ge=0, doc="seed of the built-in demo planet (data.root null)")

    def check(self, prefix: str) -> None:
        """``planet_id`` is an integer (a directory name) or null; a string of digits is taken as one."""
        pid = self.planet_id
        if pid is None:
            return
        if isinstance(pid, str) and pid.strip().isdigit():
            self.planet_id = int(pid.strip())
        elif not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise ConfigError(f"{prefix}.planet_id", pid, "must be a non-negative integer planet id "
                                                          "(a directory name under <root>/<split>), or null "
                                                          "for the first planet of the split")


@dataclass
class RuntimeConfig:
    chunk_frames: int = opt(512, ge=2, doc="frames per streamed chunk (bounds memory)")
    from_stage: Any = opt(None, nullable=True, doc="recompute this stage and all later ones, ignoring their cache")


@dataclass
class ValidatedConfig:
    """The typed view of a composed profile."""

    cfg: DictConfig                                  #: the effective (method block applied) config
    stages: dict[str, Any]                           #: typed stage configs in execution order (all, enabled or not)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def enabled(self) -> list[str]:
        return [name for name, c in self.stages.items() if c.enabled]


def stage_schema(name: str) -> type:
    """The config dataclass of stage ``name`` (its ``config`` module: no numerics are imported)."""
    from ..stages import stage_schema as schema

    return schema(name)


# ---------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any, str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            (ov,) = parser.parse_overrides([line])
        except HydraException as exc:
            raise ConfigError(line.split("=", 1)[0] if "=" in line else line, line,
                              f"not a valid override ({str(exc).splitlines()[0]}); expected key=value, with "
                              f"a value holding '=', spaces or brackets quoted") from None
        parsed.append((ov.key_or_group, ov.value(), ov.input_line))
    return parsed


def _refuse_added_top_level_keys(overrides: Sequence[str]) -> None:
    """``+foo=1`` would add a top-level key nothing reads (keys below calib/data/runtime are schema-checked)."""
    for key, value, line in _parse_overrides(overrides):
        if line.lstrip().startswith("+") and key.split(".", 1)[0] not in TOP_LEVEL_KEYS:
            raise ConfigError(key, value, "adding keys is not allowed; " + _unknown_key_hint(key))


def _compose_hydra(config_name: str, overrides: Sequence[str], config_dir: Path) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    _refuse_added_top_level_keys(overrides)

    try:
        with _HYDRA_LOCK, initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    except HydraException as exc:
        msg = str(exc).splitlines()[0]
        missing = "Could not override '"
        if missing in msg:
            key = msg.split(missing, 1)[1].split("'", 1)[0]
            raise ConfigError(key, _override_value(overrides, key), _unknown_key_hint(key)) from None
        if "Cannot find primary config" in msg:
            profiles = sorted(p.stem for p in (config_dir / "calib").glob("*.yaml") if _is_profile(p))
            raise ConfigError("--config-name", config_name,
                              "no such profile; available: " + ", ".join(f"calib/{p}" for p in profiles)) from None
        raise ConfigError("overrides", list(overrides), msg) from None


def _is_profile(path: Path) -> bool:
    return path.read_text().lstrip().startswith("# @package _global_")


def _override_value(overrides: Sequence[str], key: str) -> Any:
    for ov in overrides:
        if ov.lstrip("+~").split("=", 1)[0] == key:
            return ov.split("=", 1)[1] if "=" in ov else None
    return None


def _unknown_key_hint(key: str) -> str:
    """'no such key; allowed: ...' for a dotted calib key."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[0] == "calib":
        from ..stages import STAGE_NAMES

        if len(parts) == 2 or parts[1] not in STAGE_NAMES:
            if parts[1] in STAGE_NAMES:
                return "no such key"
            allowed = [*STAGE_NAMES, *RESERVED_CALIB_KEYS]
            return "no such stage section; allowed: " + ", ".join(allowed)
        node: Any = stage_schema(parts[1])
        for name in parts[2:-1]:
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if name not in fields:
                return f"no such key ('{name}' unknown)"
            node = _field_type(fields[name])
        if dataclasses.is_dataclass(node):
            return "no such key; allowed here: " + ", ".join(f.name for f in dataclasses.fields(node))
        return "no such key"
    top = {"data": DataConfig, "runtime": RuntimeConfig}
    if parts[0] in top and len(parts) == 2:
        return "no such key; allowed here: " + ", ".join(f.name for f in dataclasses.fields(top[parts[0]]))
    return "no such key; top-level keys are calib, data, runtime, run_dir"


def _field_type(f: dataclasses.Field) -> Any:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
    return type(default) if dataclasses.is_dataclass(default) else None


def _load_file(path: Path, overrides: Sequence[str]) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in many types
        raise ConfigError(str(path), "(file)", f"not a readable YAML profile: {exc}") from None
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("calib"), DictConfig):
        raise ConfigError(str(path), "(file)", "a profile needs a top-level 'calib' section")
    base = OmegaConf.create({
        "data": OmegaConf.structured(DataConfig), "runtime": OmegaConf.structured(RuntimeConfig),
        "run_dir": f"runs/{cfg.calib.get('profile', 'custom')}",
    })
    cfg = OmegaConf.merge(OmegaConf.to_container(base), cfg)
    OmegaConf.set_struct(cfg, True)
    for key, value, line in _parse_overrides(overrides):
        if line.startswith("+"):
            raise ConfigError(key, value, "adding keys is not allowed; use an existing key")
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(key, value, _unknown_key_hint(key))
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _apply_method_block(cfg: DictConfig, overrides: Sequence[str]) -> None:
    block = OmegaConf.select(cfg, "calib.method")
    if block:
        for dotted, value in block.items():
            key = f"calib.{dotted}"
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"calib.method['{dotted}']", value, _unknown_key_hint(key))
            OmegaConf.update(cfg, key, value, merge=False)
        # command-line overrides win over the profile's method block
        for key, value, _ in _parse_overrides(overrides):
            if key.startswith("calib.") and not key.startswith("calib.method"):
                OmegaConf.update(cfg, key, value, merge=False)
    with open_dict(cfg):
        cfg.calib.method = {}


def compose_config(config_name: str = "calib/nominal", overrides: Sequence[str] = (),
                   config_dir: str | os.PathLike | None = None) -> DictConfig:
    """Compose a profile (name or YAML path) with overrides into an effective, validated config.

    Raises
    ------
    ConfigError
        One line naming the key, the value and what is allowed.
    """
    overrides = list(overrides)
    path = Path(config_name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        cfg = _load_file(path, overrides)
    else:
        cfg = _compose_hydra(config_name.removesuffix(".yaml"), overrides, Path(config_dir or CONFIG_DIR))
    # the seed's skeletons also spell the block as a literal top-level "calib.method" key
    if "calib.method" in cfg:
        with open_dict(cfg):
            cfg.calib.method = OmegaConf.merge(cfg.calib.get("method") or {}, cfg.pop("calib.method"))
    _apply_method_block(cfg, overrides)
    _canonical_order(cfg)
    validate_config(cfg)
    return cfg


def _stage_rank(name: Any) -> tuple[int, str]:
    from ..stages import STAGE_NAMES

    return (STAGE_NAMES.index(name) if name in STAGE_NAMES else len(STAGE_NAMES), str(name))


def _canonical_order(cfg: DictConfig) -> None:
    """Put the stage sections of ``cfg.calib`` in execution order (the reserved keys after them).

    The order of the sections in a file carries no meaning -- the chain's order is the engine's
    (:data:`calib_core.stages.STAGE_NAMES`) -- so a profile re-dumped with sorted keys is the same profile.
    """
    keys = list(cfg.calib.keys())
    ordered = sorted((k for k in keys if k not in RESERVED_CALIB_KEYS), key=_stage_rank) + [
        k for k in keys if k in RESERVED_CALIB_KEYS]
    if ordered == keys:
        return
    sections = {k: cfg.calib[k] for k in ordered}
    with open_dict(cfg):
        for k in keys:
            cfg.calib.pop(k)
        for k in ordered:
            cfg.calib[k] = sections[k]


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _schema_node(schema: type) -> DictConfig:
    """The structured-config node of a schema (built once: ``merge`` never mutates it)."""
    return OmegaConf.structured(schema)


#: typed sections already validated, by (schema, prefix, content); see :func:`_typed_section`
_VALIDATED: dict[tuple, Any] = {}
_VALIDATED_MAX = 1024


def _section_key(schema: type, section: Any, prefix: str) -> tuple | None:
    """The complete input of validating ``section``: schema, key prefix and the resolved content."""
    try:
        content = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else section
        return schema, prefix, json.dumps(content, sort_keys=True, default=repr)
    except Exception:  # noqa: BLE001 -- e.g. a broken interpolation: validated (and reported) below
        return None


def _typed_section(schema: type, section: Any, prefix: str) -> Any:
    """``section`` merged into ``schema`` and checked; a fresh typed object on every call.

    Validating is a pure function of :func:`_section_key`, and the merge into
    the structured schema is the slow part of validation, so a section whose
    content was validated before (the app validates the whole profile on each
    edit, and the runner again) is answered from a copy of that result.
    """
    key = _section_key(schema, section, prefix)
    cached = _VALIDATED.get(key) if key is not None else None     # one lookup: another thread may clear it
    if cached is not None:
        return copy.deepcopy(cached)
    obj = _merge_and_check(schema, section, prefix)
    if key is not None:
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED[key] = copy.deepcopy(obj)
    return obj


def _merge_and_check(schema: type, section: Any, prefix: str) -> Any:
    try:
        merged = OmegaConf.merge(_schema_node(schema), section)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        sub = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
        key = f"{prefix}.{sub}" if sub else prefix
        value = OmegaConf.select(section, str(sub), default=None) if sub and isinstance(section, DictConfig) else None
        msg = getattr(exc, "msg", str(exc)).splitlines()[0]
        if "not in" in msg or "Key '" in msg:
            raise ConfigError(key, value, _unknown_key_hint(key) if prefix.startswith("calib.") else f"no such key ({msg})") from None
        raise ConfigError(key, value, msg) from None
    check_constraints(obj, prefix)
    return obj


def validate_config(cfg: DictConfig) -> ValidatedConfig:
    """Type-check every section and the I/O chain; return typed stage configs."""
    from ..stages import STAGE_NAMES

    if "calib" not in cfg or not isinstance(cfg.calib, DictConfig):
        raise ConfigError("calib", None, "a profile needs a 'calib' section with stage sections")
    stages: dict[str, Any] = {}
    # execution order is the engine's, whatever the order of the sections in the file
    for name in sorted((k for k in cfg.calib.keys() if k not in RESERVED_CALIB_KEYS), key=_stage_rank):
        if name not in STAGE_NAMES:
            raise ConfigError(f"calib.{name}", "(section)", "unknown stage; allowed: " + ", ".join(STAGE_NAMES))
        stages[str(name)] = _typed_section(stage_schema(name), cfg.calib[name], f"calib.{name}")
    if not stages:
        raise ConfigError("calib", "(empty)", "the profile lists no stages")
    data = _typed_section(DataConfig, cfg.get("data", {}), "data")
    runtime = _typed_section(RuntimeConfig, cfg.get("runtime", {}), "runtime")
    if runtime.from_stage is not None and runtime.from_stage not in stages:
        raise ConfigError("runtime.from_stage", runtime.from_stage, "must be one of " + ", ".join(stages))
    if not data.instruments:
        raise ConfigError("data.instruments", [], "list at least one of " + ", ".join(INSTRUMENT_NAMES))
    _check_chain(stages)
    return ValidatedConfig(cfg, stages, data, runtime)


def _check_chain(stages: dict[str, Any]) -> None:
    from ..stages import stage_info

    previous_out, previous_name = "raw_frames", "(raw data)"
    seen_planet_scope = None
    for name, c in stages.items():
        if not c.enabled:
            continue
        scope = stage_info(name).scope
        if scope == "instrument" and seen_planet_scope:
            raise ConfigError(f"calib.{name}", "(position)",
                              f"an instrument stage cannot run after the planet stage '{seen_planet_scope}'")
        if scope == "planet":
            seen_planet_scope = name
        if c.io.input_key != previous_out:
            raise ConfigError(
                f"calib.{name}.io.input_key", c.io.input_key,
                f"must be '{previous_out}', the output_key of the previous enabled stage {previous_name}",
            )
        previous_out, previous_name = c.io.output_key, f"'{name}'"


# ---------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------


def config_to_yaml(cfg: DictConfig, resolve: bool = True) -> str:
    """YAML text of the effective config (re-usable as ``--config-name FILE``)."""
    return OmegaConf.to_yaml(cfg, resolve=resolve)


def typed_content(cfg: DictConfig) -> dict:
    """The stage sections and the data section as validated, typed values (plain dicts).

    Values pass through their schema, so ``radius_px: 8`` and ``radius_px: 8.0``
    (a float key) are the same content; the profile's name is not content.
    """
    vc = validate_config(cfg)
    return {"calib": {name: dataclasses.asdict(section) for name, section in vc.stages.items()},
            "data": dataclasses.asdict(vc.data)}


def config_hash(cfg: DictConfig) -> str:
    """sha256 of what determines the results: the typed stage and data sections (not run_dir/runtime)."""
    import hashlib

    return hashlib.sha256(json.dumps(typed_content(cfg), sort_keys=True, default=str).encode()).hexdigest()
