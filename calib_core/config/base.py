"""Typed building blocks for stage configuration schemas.

Every stage section of a profile (``calib.<stage>``) is described by a dataclass.
OmegaConf uses the dataclass as a *structured config* (unknown keys and wrong
types are rejected while merging); the constraints OmegaConf cannot express
(allowed values, numeric bounds) live in each field's ``metadata`` and are
checked by :func:`check_constraints`.  The same metadata drives the widgets of
the diagnostics app, so the app never re-states a bound or a choice list.

Use :func:`opt` to declare a field::

    @dataclass
    class Pairing:
        policy: str = opt("n_minus_1", choices=("n_minus_1", "nearest"),
                          doc="how a signal read finds its reset read")
        window_s: float = opt(5.0, gt=0, doc="max time gap for 'nearest' (s)")
        window: int = opt(7, ge=3, odd=True, doc="running-median window (frames)")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

__all__ = [
    "ConfigError",
    "opt",
    "CacheConfig",
    "IOConfig",
    "LoggingConfig",
    "QualityChecks",
    "StageConfig",
    "ValidationConfig",
    "check_constraints",
    "iter_fields",
]


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message is one line that names the full key, the offending value and
    what is allowed, e.g.
    ``calib.cds.pairing.window_s = -1.0: must be > 0``.
    """

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r}: {allowed}")


def opt(
    default: Any,
    *,
    doc: str = "",
    choices: Sequence[Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    nullable: bool = False,
    odd: bool = False,
    unit: str = "",
) -> Any:
    """Declare a config field with documentation and constraints.

    Mutable defaults (lists, dicts, dataclass instances) are wrapped in a
    ``default_factory`` automatically.
    """
    meta = {
        "doc": doc,
        "choices": tuple(choices) if choices is not None else None,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "nullable": nullable,
        "odd": odd,
        "unit": unit,
    }
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        value = default
        return field(default_factory=lambda: dataclasses.replace(value), metadata=meta)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _bound_text(meta: dict) -> str:
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]:g}")
    return " and ".join(parts)


def _check_value(key: str, value: Any, meta: dict) -> None:
    if value is None:
        if meta.get("nullable"):
            return
        raise ConfigError(key, value, "must be set (null is not allowed)")
    choices = meta.get("choices")
    if choices is not None:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item not in choices:
                raise ConfigError(key, item, "must be one of " + ", ".join(map(str, choices)))
    if isinstance(value, bool):
        return
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers:
        if not isinstance(number, (int, float)):
            continue
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(key, number, "must be a finite number")
        bad = (
            (meta.get("ge") is not None and number < meta["ge"])
            or (meta.get("gt") is not None and number <= meta["gt"])
            or (meta.get("le") is not None and number > meta["le"])
            or (meta.get("lt") is not None and number >= meta["lt"])
        )
        if bad:
            raise ConfigError(key, number, "must be " + _bound_text(meta))
        if meta.get("odd") and int(number) % 2 != 1:
            raise ConfigError(key, number, "must be odd (a centred window)")


def iter_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield ``(dotted_key, field, value)`` for every leaf of a config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, key)
        else:
            yield key, f, value


def check_constraints(obj: Any, prefix: str) -> None:
    """Check choices and bounds of every field; then the dataclass's own ``check``.

    Raises
    ------
    ConfigError
        For the first violation, naming ``prefix.<field path>``.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            check_constraints(value, key)
        else:
            _check_value(key, value, dict(f.metadata))
    extra = getattr(obj, "check", None)
    if callable(extra):
        extra(prefix)


# --------------------------------------------------------------------------
# Sections shared by every stage
# --------------------------------------------------------------------------


@dataclass
class IOConfig:
    input_key: str = opt("", doc="key this stage reads (previous enabled stage's output_key)")
    output_key: str = opt("", doc="key this stage writes")


@dataclass
class ValidationConfig:
    require_finite_inputs: bool = opt(True, doc="reject NaN/Inf on good pixels of the input")
    check_shape_compatibility: bool = opt(True, doc="calibration maps must match the frame shape "
                                          "(false: a map that broadcasts to it, e.g. one row, is expanded)")
    require_existing_paths: bool = opt(True, doc="files referenced by the stage must exist")


@dataclass
class QualityChecks:
    enabled: bool = opt(True, doc="evaluate the stage's QC gates")
    action_on_fail: str = opt("warn", choices=("warn", "error"), doc="warn: record and continue; error: stop the run")


@dataclass
class LoggingConfig:
    level: str = opt("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), doc="log verbosity")
    log_sample_stats: bool = opt(True, doc="log the stage's summary statistics")


@dataclass
class CacheConfig:
    enabled: bool = opt(True, doc="reuse this stage's stored output when its inputs and config are unchanged")
    write_intermediate: bool = opt(True, doc="write the stage output to run_dir/calib/<stage>/<instrument>/ "
                                             "(false: run_dir/.scratch; ADC, dark and flat then stream in memory "
                                             "into the next detector stage, without storing their frame planes)")


@dataclass
class StageConfig:
    """Fields every stage section has; stages subclass it and add theirs."""

    enabled: bool = opt(True, doc="run this stage")
    io: IOConfig = opt(IOConfig, doc="input/output keys")
    validation: ValidationConfig = opt(ValidationConfig, doc="input checks")
    quality_checks: QualityChecks = opt(QualityChecks, doc="QC gates")
    logging: LoggingConfig = opt(LoggingConfig, doc="log settings")
    cache: CacheConfig = opt(CacheConfig, doc="reuse of the stored output")
