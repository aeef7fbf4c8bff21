"""``spectramind``: the command line of the calibration engine.

Subcommands::

    spectramind calibrate --config-name calib/nominal [--cfg job [--resolve]] [key=value ...]
    spectramind audit     --config-name calib/strict  [key=value ...]
    spectramind batch     --config-name calib/nominal --out DIR [--planets 1,2] [--workers 2] data.root=DIR
    spectramind make-demo OUT [--seed N] [--full] [--n-pairs N] [--drop-pairs N] [--overwrite]
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

    bat = sub.add_parser("batch", help="calibrate many planets of a dataset in parallel (Dask distributed)")
    add_profile_args(bat, "calib/nominal")
    bat.add_argument("--out", type=Path, required=True, help="batch output directory")
    bat.add_argument("--planets", default=None, help="comma-separated planet ids (default: all of data.split)")
    bat.add_argument("--workers", type=int, default=2, help="worker processes")
    bat.set_defaults(func=_batch)

    demo = sub.add_parser("make-demo", help="write a synthetic planet with ground truth in the Kaggle layout")
    demo.add_argument("out", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--full", action="store_true", help="full size: 11250 AIRS-CH0 / 135000 FGS1 frames")
    demo.add_argument("--n-pairs", type=int, default=None, help="read pairs per instrument (default demo size)")
    demo.add_argument("--drop-pairs", type=int, default=0, help="pairs lost in telemetry (zero-filled)")
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


def _batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .config import compose_config

    cfg = compose_config(args.config_name, args.overrides, args.config_dir)   # validate before starting workers
    if cfg.data.root is None:
        raise ValueError("batch needs data.root=DIR (a dataset in the Kaggle layout)")
    ids = [int(p) for p in args.planets.split(",")] if args.planets else None
    outcomes = run_batch(args.config_name, args.overrides, root=cfg.data.root, out_dir=args.out,
                         split=cfg.data.split, planet_ids=ids, workers=args.workers)
    for o in outcomes:
        print(f"{o.planet_id:>12}  {o.status:<7}{o.seconds:>8.1f} s  {o.message}")
    n_bad = sum(o.status != "ok" for o in outcomes)
    print(f"{len(outcomes) - n_bad}/{len(outcomes)} planets ok; submission: {args.out / 'submission.csv'}")
    return 1 if n_bad else 0


def _check_make_demo_args(args: argparse.Namespace) -> None:
    """One ConfigError line naming the option for every argument make_demo would refuse."""
    from .config import ConfigError
    from .io.demo import DEFAULT_N_PAIRS
    from .io.kaggle import FULL_FRAMES

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
    from .io.demo import make_demo

    _check_make_demo_args(args)
    out = make_demo(args.out, seed=args.seed, full=args.full, planet_id=args.planet_id, n_pairs=args.n_pairs,
                    drop_pairs=args.drop_pairs, overwrite=args.overwrite)
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
        print(f"spectramind: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback, for every failure
        print(f"spectramind: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2 if type(exc).__name__ == "ConfigError" else 1
    finally:
        logging.getLogger("calib_core").removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
