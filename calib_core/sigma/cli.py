"""``spectramind sigma-calibrate``: fit a sigma calibration on labelled predictions and apply it.

Usage::

    spectramind sigma-calibrate --preds FIT_PREDS --targets LABELS --out DIR
        [--apply-to OTHER_PREDS] [--wavelengths wavelengths.csv]
        [--config-name calib/nominal] [calib.top_level_calib.KEY=VALUE ...]

The labelled planets are split (``split.calib_fraction``, ``split.seed``) into
a calibration part, on which the model is fitted, and an evaluation part, on
which the metrics before/after are measured.  Written atomically in ``DIR``:
``<stem>_calibrated.<ext>`` for FIT_PREDS (and OTHER_PREDS), ``model.json``
(loadable by the stage's ``model_path``), ``metrics.json`` and ``plots.json``.

Config: without ``--config-name`` the section comes from
``configs/calib/top_level_calib.yaml`` plus the ``calib.top_level_calib.*``
overrides; with it, from the composed profile.  ``method: none`` (the stage's
default) means temperature scaling here.  Exit codes: 0 success, 2 invalid
input or config (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config.base import ConfigError, check_constraints
from ..config.compose import CONFIG_DIR, compose_config, validate_config
from ..store import atomic_write_json
from ..stages.top_level_calib.config import TopLevelCalibConfig
from .corel import split_planets
from .metrics import evaluate
from .model import SigmaModel, fit_model, metric_kwargs, save_model
from .plots import SUMMARY_METRICS, diagnostics
from .predictions import (
    InputError,
    Predictions,
    Targets,
    align_targets,
    read_predictions,
    read_targets,
    write_predictions,
)

KEY = "calib.top_level_calib"

__all__ = ["build_parser", "load_config", "calibrate", "summary", "main"]

PROG = "spectramind sigma-calibrate"
STAGE_FILE = CONFIG_DIR / "calib" / "top_level_calib.yaml"
_MISSING = object()


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser of ``sigma-calibrate``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Fit a sigma calibration (temperature or COREL) on labelled predictions, "
                               "report the challenge score before/after and write calibrated predictions.")
    parser.add_argument("--preds", required=True,
                        help="labelled predictions: submission CSV, depths.csv, .npz, .pt, run directory or glob")
    parser.add_argument("--targets", required=True, help="labels, train.csv layout (planet_id, wl_1..wl_283)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--apply-to", help="other predictions to calibrate with the fitted model")
    parser.add_argument("--wavelengths", help="dataset wavelengths.csv for the COREL graph (default: standard grid)")
    parser.add_argument("--config-name", help="profile to take calib.top_level_calib from (e.g. calib/nominal); "
                                              "default: configs/calib/top_level_calib.yaml")
    parser.add_argument("overrides", nargs="*", help="overrides such as calib.top_level_calib.method=corel")
    return parser


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, object, bool]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError("overrides", list(overrides), str(exc).splitlines()[0]) from None
    return [(ov.key_or_group, ov.value(), ov.is_add() or ov.is_delete()) for ov in parsed]


def _stage_file_config(overrides: Sequence[str]) -> TopLevelCalibConfig:
    node = OmegaConf.merge(OmegaConf.structured(TopLevelCalibConfig), OmegaConf.load(STAGE_FILE))
    for key, value, adds in _parse_overrides(overrides):
        if not key.startswith(KEY + "."):
            raise ConfigError(key, value, f"without --config-name only {KEY}.* overrides apply")
        sub = key[len(KEY) + 1:]
        if adds or OmegaConf.select(node, sub, default=_MISSING) is _MISSING:
            raise ConfigError(key, value, "no such key (adding or deleting keys is not allowed)")
        try:
            OmegaConf.update(node, sub, value, merge=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(key, value, str(exc).splitlines()[0]) from None
    cfg = OmegaConf.to_object(node)
    check_constraints(cfg, KEY)
    return cfg


def _require_files(cfg: TopLevelCalibConfig) -> TopLevelCalibConfig:
    """``sigma-calibrate`` reads the files its operator names (it serves no one else): they must exist."""
    if cfg.validation.require_existing_paths:
        for name in ("model_path", "wavelengths_path"):
            value = getattr(cfg, name)
            if value is not None and not Path(value).expanduser().is_file():
                raise ConfigError(f"{KEY}.{name}", value, "file does not exist")
    return cfg


def load_config(config_name: str | None, overrides: Sequence[str]) -> TopLevelCalibConfig:
    """The typed ``calib.top_level_calib`` section.

    Parameters
    ----------
    config_name : str or None
        Profile (name or YAML path) composed with Hydra; None reads the stage
        file ``configs/calib/top_level_calib.yaml``.
    overrides : sequence of str
        Hydra-style ``key=value`` overrides.

    Raises
    ------
    ConfigError
        Unknown key, wrong type, value out of range, or a profile without the section.
    """
    if config_name is None:
        return _require_files(_stage_file_config(overrides))
    stages = validate_config(compose_config(config_name, overrides)).stages
    if "top_level_calib" not in stages:
        raise ConfigError("--config-name", config_name,
                          "the profile has no calib.top_level_calib section; add top_level_calib to its defaults")
    return _require_files(stages["top_level_calib"])


# ---------------------------------------------------------------------------
# the calibration run
# ---------------------------------------------------------------------------


def _split(preds: Predictions, cfg: TopLevelCalibConfig) -> tuple[np.ndarray, np.ndarray]:
    if preds.n_planets < 2:
        raise InputError(preds.source, f"{preds.n_planets} labelled planet; at least 2 are needed "
                                       "(one to fit, one to evaluate)")
    return split_planets(preds.n_planets, cfg.split.calib_fraction, cfg.split.seed)


def _ids(preds: Predictions, rows: np.ndarray) -> list[int]:
    return preds.ids[rows].tolist() if preds.ids is not None else rows.tolist()


def _write_calibrated(preds: Predictions, model: SigmaModel, out: Path) -> Path:
    return write_predictions(preds, preds.mu, model.apply(preds.sigma), out, model.scale)


def _resolve_config(args: argparse.Namespace) -> tuple[TopLevelCalibConfig, list[str]]:
    cfg = load_config(args.config_name, args.overrides)
    notes = []
    if cfg.method == "none":
        cfg = dataclasses.replace(cfg, method="temperature")
        notes.append("method none (the stage default) means temperature here; set calib.top_level_calib.method")
    if args.wavelengths:
        cfg = dataclasses.replace(cfg, wavelengths_path=args.wavelengths)
    return cfg, notes


def _read_inputs(args: argparse.Namespace, cfg: TopLevelCalibConfig
                 ) -> tuple[Predictions, Targets, np.ndarray, Predictions | None]:
    preds = read_predictions(args.preds, cfg.bins)
    targets = read_targets(args.targets, cfg.bins)
    y = align_targets(preds, targets)
    other = read_predictions(args.apply_to, cfg.bins) if args.apply_to else None
    if other is not None and other.output_name == preds.output_name:
        raise InputError(args.apply_to, f"would be written as {other.output_name}, like --preds; rename one input")
    return preds, targets, y, other


def _negative_mu_notes(*inputs: Predictions | None) -> list[str]:
    return [f"{p.source}: {int(np.count_nonzero(p.mu < 0))} negative mu value(s); the challenge metric "
            "rejects a submission with negative values" for p in inputs if p is not None and np.any(p.mu < 0)]


def _check_out_dir(out: Path) -> None:
    """``--out`` must be a directory or creatable as one (checked before any input is read)."""
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        what = "exists" if blocking == out else f"its parent {blocking} exists"
        raise InputError(f"--out {out}", f"{what} and is not a directory; expected an output directory "
                                         "(created if absent)")


def calibrate(args: argparse.Namespace) -> dict:
    """Run ``sigma-calibrate`` for parsed arguments; return the metrics written to ``metrics.json``.

    Raises
    ------
    InputError, ConfigError
        Invalid inputs or configuration (nothing is written).
    """
    _check_out_dir(Path(args.out))
    cfg, notes = _resolve_config(args)
    preds, targets, y, other = _read_inputs(args, cfg)
    notes += _negative_mu_notes(preds, other)
    notes += [*preds.skipped, *(other.skipped if other is not None else [])]
    fit_rows, eval_rows = _split(preds, cfg)
    model = fit_model(cfg, y[fit_rows], preds.mu[fit_rows], preds.sigma[fit_rows])
    out = Path(args.out)
    outputs = [_write_calibrated(p, model, out) for p in (preds, other) if p is not None]
    save_model(out / "model.json", model)
    kwargs = metric_kwargs(cfg)
    y_eval, mu_eval, sigma_eval = y[eval_rows], preds.mu[eval_rows], preds.sigma[eval_rows]
    metrics = {
        "method": cfg.method,
        "notes": notes,
        "inputs": {"preds": preds.source, "targets": str(targets.path), "apply_to": args.apply_to,
                   "n_planets": preds.n_planets, "wavelengths": cfg.wavelengths_path or "standard grid"},
        "split": {"calib_fraction": cfg.split.calib_fraction, "seed": cfg.split.seed,
                  "n_calibration": int(fit_rows.size), "n_evaluation": int(eval_rows.size),
                  "calibration_ids": _ids(preds, fit_rows), "evaluation_ids": _ids(preds, eval_rows)},
        "model": {"method": model.method, "scale": model.scale.tolist(), "details": model.details},
        "before": evaluate(y_eval, mu_eval, sigma_eval, **kwargs),
        "after": evaluate(y_eval, mu_eval, model.apply(sigma_eval), **kwargs),
        "config": dataclasses.asdict(cfg),
        "outputs": [str(p) for p in (*outputs, out / "model.json", out / "plots.json", out / "metrics.json")],
    }
    atomic_write_json(out / "plots.json", diagnostics(metrics))
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _model_line(metrics: dict) -> str:
    model = metrics["model"]
    if model["method"] == "temperature":
        t = model["details"]["T"]
        fitted = (f"per-bin T {min(t):.3f}..{max(t):.3f} (mean {np.mean(t):.3f})" if isinstance(t, list)
                  else f"global T = {t:.4f}")
    else:
        scale = np.asarray(model["scale"])
        fitted = f"COREL scales {scale.min():.3f}..{scale.max():.3f} (mean {scale.mean():.3f})"
    split = metrics["split"]
    return (f"{metrics['method']}: {fitted}; fitted on {split['n_calibration']} planets, "
            f"evaluated on {split['n_evaluation']} held-out planets")


def summary(metrics: dict) -> str:
    """Short human-readable report: fitted model and metrics before -> after."""
    lines = [_model_line(metrics)]
    lines += [f"note: {note}" for note in metrics["notes"]]
    lines.append(f"{'metric':<18}{'before':>12}    {'after':>12}")
    for key, label in SUMMARY_METRICS:
        lines.append(f"{label:<18}{metrics['before'][key]:>12.5g} -> {metrics['after'][key]:>12.5g}")
    lines.append("wrote " + ", ".join(metrics["outputs"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spectramind sigma-calibrate``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        metrics = calibrate(args)
    except (InputError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:                  # e.g. --out not writable: one line, no traceback
        where = exc.filename if exc.filename is not None else args.out
        print(f"{PROG}: error: {where}: {exc.strerror or exc}; expected a writable output directory",
              file=sys.stderr)
        return 2
    print(summary(metrics))
    return 0
