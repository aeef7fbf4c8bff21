"""``spectramind``: the command line of the calibration engine.

Subcommands::

    spectramind calibrate --config-name calib/nominal [--cfg job [--resolve]] [key=value ...]
    spectramind audit     --config-name calib/strict  [key=value ...]
    spectramind batch     --config-name calib/nominal --out DIR [--planets 1,2] [--workers 2 | --scheduler ADDRESS |
                          --scheduler-file FILE] [--keep all|series|depths] [--no-dashboard] data.root=DIR
    spectramind dvc       --config-name calib/nominal data.root=DIR [data.planet_id=ID | --planets 1,2] [key=value ...]
    spectramind make-demo OUT [--seed N] [--full] [--n-pairs N] [--drop-pairs N] [--flux-scale F]
                          [--jitter-scale F] [--overwrite]
    spectramind sigma-calibrate --preds P --targets T --out DIR [...]

Other packages add commands through the entry-point group ``spectramind.commands``:
each entry point is a function that adds a sub-parser (with ``set_defaults(func=...)``,
``func(args) -> exit code``) to the sub-commands given to it.  The diagnostics app
adds ``spectramind app`` and ``spectramind audit`` that way (:mod:`spectramind_app.commands`),
so the engine never imports the app.

Every error ends the process with a non-zero exit code and one line saying why.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

__all__ = ["COMMAND_GROUP", "add_profile_args", "compose_from_args", "main", "print_summary"]

#: entry-point group of the commands other packages add to ``spectramind``
COMMAND_GROUP = "spectramind.commands"


def add_profile_args(p: argparse.ArgumentParser, default: str) -> None:
    """``--config-name``, ``--config-dir`` and the Hydra overrides of a command that runs a profile."""
    p.add_argument("--config-name", "-cn", default=default,
                   help=f"profile name under configs/ (e.g. calib/nominal) or a YAML file (default {default})")
    p.add_argument("--config-dir", default=None, help="configs directory (default: the project's configs/)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. calib.cds.pairing.window_s=3.0")


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import entry_points

    parser = argparse.ArgumentParser(prog="spectramind", description="Ariel calibration chain and diagnostics")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress to stderr (-v: each stage's summary, -vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    cal = sub.add_parser("calibrate", help="run the calibration chain on a planet (default: the demo planet)")
    add_profile_args(cal, "calib/nominal")
    cal.add_argument("--cfg", choices=("job",), help="print the composed config and exit (Hydra style)")
    cal.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    cal.add_argument("--package", "-p", default=None, help="with --cfg: print only this subtree (e.g. calib.cds)")
    cal.set_defaults(func=_calibrate)

    bat = sub.add_parser("batch", help="calibrate many planets of a dataset in parallel (Dask distributed); "
                                       "resumable: complete planets are reused")
    add_profile_args(bat, "calib/nominal")
    bat.add_argument("--out", type=Path, required=True, help="batch output directory")
    bat.add_argument("--planets", default=None,
                     help="comma-separated planet ids (default: data.planet_id if set, else all of data.split)")
    bat.add_argument("--workers", default=None,
                     help="worker processes of the local cluster (default 2; not with --scheduler)")
    bat.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="address of a running Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    bat.add_argument("--scheduler-file", default=None, type=Path, metavar="FILE",
                     help="scheduler file of a running Dask scheduler (dask scheduler --scheduler-file FILE)")
    bat.add_argument("--keep", default="series", choices=("all", "series", "depths"),
                     help="what a successful planet keeps: all; series (no detector frame planes, the default); "
                          "depths (depths.csv, depths_calibrated.csv if written, qc.json, config.yaml, "
                          "run_hash_summary.json, debug_log.md)")
    bat.add_argument("--dashboard-address", default="127.0.0.1:8787",
                     help="dashboard of the local cluster (default 127.0.0.1:8787, another port if taken)")
    bat.add_argument("--no-dashboard", action="store_true", help="local cluster without a dashboard")
    bat.set_defaults(func=_batch)

    dvc = sub.add_parser("dvc", help="write dvc.yaml + params.yaml (one DVC stage per planet) into the current "
                                     "directory; then 'dvc repro' calibrates what changed")
    add_profile_args(dvc, "calib/nominal")
    dvc.add_argument("--planets", default=None,
                     help="comma-separated planet ids (default: data.planet_id if set, else all of data.split)")
    dvc.add_argument("--runs-dir", default="runs", help="run directories, relative to the current directory "
                                                         "(default runs/<planet_id>)")
    dvc.add_argument("--force", action="store_true",
                     help="replace a dvc.yaml / params.yaml not written by spectramind")
    dvc.set_defaults(func=_dvc)

    demo = sub.add_parser("make-demo", help="write a synthetic planet with ground truth in the Kaggle layout")
    demo.add_argument("out", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--full", action="store_true", help="full size: 11250 AIRS-CH0 / 135000 FGS1 frames")
    demo.add_argument("--n-pairs", type=int, default=None, help="read pairs per instrument (default demo size)")
    demo.add_argument("--drop-pairs", type=int, default=0, help="pairs lost in telemetry (zero-filled)")
    demo.add_argument("--flux-scale", type=float, default=1.0, help="stellar brightness factor (0.1 = fainter star)")
    demo.add_argument("--jitter-scale", type=float, default=1.0, help="pointing jitter rms factor (0 = none)")
    demo.add_argument("--planet-id", type=int, default=None)
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(func=_make_demo)

    sig = sub.add_parser("sigma-calibrate", help="fit/apply sigma calibration (temperature, COREL)",
                         add_help=False)
    sig.add_argument("rest", nargs=argparse.REMAINDER)

    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def print_summary(result) -> None:
    """The run's stages, QC gates, outputs and (with labels) its accuracy, as a table on stdout."""
    print(f"run_dir: {result.run_dir}")
    print(f"{'stage':<16}{'instrument':<11}{'status':<8}{'time s':>8}  QC")
    for r in result.records:
        if r.status == "skipped":
            qc = r.reason
        elif not r.gates:
            qc = "-"
        else:
            qc = " ".join(f"{g.name}:{'pass' if g.passed else g.action.upper()}" for g in r.gates)
        print(f"{r.stage:<16}{(r.instrument or 'planet'):<11}{r.status:<8}{r.seconds:>8.2f}  {qc}")
    outputs = ["config.yaml", "qc.json", "run_hash_summary.json", "calib/<stage>/<instrument>/"]
    if (result.run_dir / "depths.csv").exists():
        outputs.append("depths.csv")
    print("outputs: " + ", ".join(outputs))
    depths = result.record("depths")
    if depths is not None and "residual_z_std" in depths.metrics:
        m = depths.metrics
        print(f"depths vs truth: white-light z {m['z_white']:+.2f}, per-channel (mu - truth)/sigma "
              f"mean {m['residual_z_mean']:+.2f} std {m['residual_z_std']:.2f}, t0 {m['t0_h']:.3f} h")
    print(f"status: {result.status}  config_hash: {result.config_hash[:16]}")


def compose_from_args(args: argparse.Namespace):
    """The effective config of a command's ``--config-name``, ``--config-dir`` and overrides."""
    from .config import compose_config

    return compose_config(args.config_name, args.overrides, args.config_dir)


def _calibrate(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from .config import config_to_yaml

    from .config import ConfigError

    if args.cfg is None and (args.package or args.resolve):
        raise ConfigError("--package" if args.package else "--resolve", args.package or True,
                          "only applies with --cfg job (printing the composed config)")
    cfg = compose_from_args(args)
    if args.cfg == "job":
        node = OmegaConf.select(cfg, args.package, default=None) if args.package else cfg
        if node is None:
            raise ConfigError("--package", args.package, "no such section of the composed config; top-level "
                                                         "sections are " + ", ".join(map(str, cfg.keys())))
        text = OmegaConf.to_yaml(node, resolve=args.resolve) if args.package else config_to_yaml(cfg, args.resolve)
        print(text, end="")
        return 0
    from .chain import run_chain

    result = run_chain(cfg, progress=None)
    print_summary(result)
    return 0


class ArgumentError(ValueError):
    """A command-line argument is invalid (the message names it); exit code 2."""


def _planet_list(text: str | None) -> list[str] | None:
    """``--planets`` split on commas (checked later against the dataset by resolve_planet_ids)."""
    if text is None:
        return None
    return [p.strip() for p in text.split(",")]


def _out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"argument --out: {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError(f"argument --out: cannot create directory {path} ({exc.strerror or exc})") from None
    return path


def _batch(args: argparse.Namespace) -> int:
    from .batch import resolve_planet_ids, run_batch
    from .config import compose_config

    if args.scheduler and args.scheduler_file:
        raise ArgumentError("argument --scheduler-file: not allowed with --scheduler (give one of them)")
    external = bool(args.scheduler or args.scheduler_file)
    if args.workers is not None and external:
        raise ArgumentError("argument --workers: the workers of an existing cluster are the cluster's; "
                            "--workers applies to the local cluster only")
    workers = 2
    if args.workers is not None:
        try:
            workers = int(args.workers)
        except ValueError:
            raise ArgumentError(f"argument --workers: {args.workers!r} is not an integer") from None
        if workers < 1:
            raise ArgumentError(f"argument --workers: must be >= 1, got {workers}")
    if args.scheduler_file is not None and not args.scheduler_file.is_file():
        raise ArgumentError(f"argument --scheduler-file: {args.scheduler_file}: no such file")
    cfg = compose_config(args.config_name, args.overrides, args.config_dir)   # validate before starting workers
    if cfg.data.root is None:
        raise ArgumentError("batch needs data.root=DIR (a dataset in the Kaggle layout)")
    planets = _planet_list(args.planets)
    if planets is not None and cfg.data.planet_id is not None:
        raise ArgumentError("argument --planets: not allowed with data.planet_id (give one of them)")
    try:
        resolve_planet_ids(Path(str(cfg.data.root)).expanduser(), str(cfg.data.split), planets)
    except ValueError as exc:
        if str(exc).startswith("--planets"):
            raise ArgumentError(f"argument {exc}") from None
        raise
    out = _out_dir(args.out)
    outcomes = run_batch(args.config_name, args.overrides, out_dir=out, planet_ids=planets, workers=workers,
                         scheduler=args.scheduler, scheduler_file=args.scheduler_file, keep=args.keep,
                         config_dir=args.config_dir,
                         dashboard_address=None if args.no_dashboard else args.dashboard_address)
    bad = [o for o in outcomes if o.status != "ok"]
    for o in bad:
        print(f"failed: planet {o.planet_id}: {o.message}")
    n_reused = sum(o.reused for o in outcomes)
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} planets ok ({n_reused} reused); "
          f"submission: {out / 'submission.csv'}; summary: {out / 'batch_summary.json'}")
    return 1 if bad else 0


def _dvc(args: argparse.Namespace) -> int:
    from .dvc import write_pipeline

    try:
        written = write_pipeline(args.config_name, args.overrides, config_dir=args.config_dir,
                                 planet_ids=_planet_list(args.planets), directory=Path.cwd(),
                                 runs_dir=args.runs_dir, force=args.force)
    except ValueError as exc:
        if str(exc).startswith("--"):
            raise ArgumentError(f"argument {exc}") from None
        raise
    print(f"wrote {written.dvc_yaml} ({len(written.stages)} stage{'s' if len(written.stages) != 1 else ''}) "
          f"and {written.params_yaml}; run 'dvc repro' (in a git + DVC repository: git init && dvc init)")
    return 0


def _check_make_demo_args(args: argparse.Namespace) -> None:
    """One ConfigError line naming the option for every argument make_demo would refuse."""
    from .config import ConfigError
    from .sim import DEFAULT_N_PAIRS
    from .io.layout import FULL_FRAMES

    if args.seed < 0:
        raise ConfigError("--seed", args.seed, "must be >= 0")
    if args.planet_id is not None and args.planet_id < 0:
        raise ConfigError("--planet-id", args.planet_id, "must be a non-negative integer")
    if args.full and args.n_pairs is not None:
        raise ConfigError("--n-pairs", args.n_pairs, "give either --full or --n-pairs, not both")
    top = min(FULL_FRAMES.values()) // 2     # AIRS-CH0 has the fewest pairs at full size
    if args.n_pairs is not None and not 2 <= args.n_pairs <= top:
        raise ConfigError("--n-pairs", args.n_pairs, f"must be >= 2 and <= {top} (--full for the real frame counts)")
    pairs = top if args.full else args.n_pairs if args.n_pairs is not None else DEFAULT_N_PAIRS
    if not 0 <= args.drop_pairs < pairs:
        raise ConfigError("--drop-pairs", args.drop_pairs, f"must be >= 0 and < {pairs} (the read pairs)")
    blocking = next((p for p in (args.out, *args.out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError("OUT", str(args.out), f"{blocking} exists and is not a directory; expected a dataset "
                                                f"root directory (created if absent)")


def _make_demo(args: argparse.Namespace) -> int:
    from .sim import make_demo

    _check_make_demo_args(args)
    out = make_demo(args.out, seed=args.seed, full=args.full, planet_id=args.planet_id, n_pairs=args.n_pairs,
                    drop_pairs=args.drop_pairs, overwrite=args.overwrite, flux_scale=args.flux_scale,
                    jitter_scale=args.jitter_scale)
    print(f"demo planet written to {out}")
    return 0


def _console_logging(verbose: int, quiet: bool) -> logging.Handler:
    """The engine's log on stderr: warnings by default, INFO with -v, DEBUG with -vv, errors only with -q."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    engine = logging.getLogger("calib_core")
    engine.addHandler(handler)
    if engine.level == logging.NOTSET or engine.level > level:
        engine.setLevel(level)
    return handler


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends a run like Ctrl-C: the run is recorded as interrupted before the process exits."""
    raise KeyboardInterrupt("interrupted by SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectramind`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sigma-calibrate"]:      # its own parser owns every option
        from .sigma.cli import main as sigma_main

        return sigma_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    handler = _console_logging(args.verbose, args.quiet)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        print(f"spectramind: {str(exc) or 'interrupted (Ctrl-C)'}", file=sys.stderr)   # an exception is truthy
        return 130
    except ArgumentError as exc:
        print(f"spectramind {args.command}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except Exception as exc:  # one line, no traceback, for every failure
        print(f"spectramind: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2 if type(exc).__name__ == "ConfigError" else 1
    finally:
        logging.getLogger("calib_core").removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
