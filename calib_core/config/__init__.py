"""Typed, validated calibration profiles (Hydra + OmegaConf)."""

from .base import ConfigError, StageConfig, opt
from .compose import (
    CONFIG_DIR,
    ValidatedConfig,
    compose_config,
    config_hash,
    config_to_yaml,
    validate_config,
)

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "StageConfig",
    "ValidatedConfig",
    "compose_config",
    "config_hash",
    "config_to_yaml",
    "opt",
    "validate_config",
]
